"""The learned sequence cue's input: a track's skeletons over the last two seconds, resampled to a
fixed clock and normalised to the person's own size, so one small model reads people near and
far, on any camera and at any frame rate. Pure functions: the pipeline builds these windows at
run time, and scripts/train_sequence.py builds the same windows from `--trace` files.

One window is WINDOW_FRAMES steps of STEP_S; each step holds 13 body points (x, y, score) and
a flag saying whether a skeleton was seen then. Positions are relative to the hips on the
window's first seen skeleton and divided by the person's body length (the longest side of the
confident points' box, median over the window): lying or standing, that length stays about the
same, so a fall shows as the points sweeping down and sideways by about one body length.
"""


from typing import List, Optional, Sequence, Tuple

import numpy as np

from edge.types import KEYPOINT_INDEX

WINDOW_FRAMES = 20
STEP_S = 0.1  # 10 Hz: the pipeline's default processing rate
WINDOW_S = WINDOW_FRAMES * STEP_S
BODY_POINTS: Tuple[int, ...] = tuple(KEYPOINT_INDEX[name] for name in (
    "nose", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"))
FEATURES = len(BODY_POINTS) * 3 + 1
# Index pairs that swap under a left-right mirror (for the training's flip augmentation).
MIRROR_PAIRS: Tuple[Tuple[int, int], ...] = tuple((i, i + 1) for i in range(1, len(BODY_POINTS), 2))
_HIPS = (BODY_POINTS.index(KEYPOINT_INDEX["left_hip"]), BODY_POINTS.index(KEYPOINT_INDEX["right_hip"]))
_MIN_POINTS = 4  # fewer confident points than this is no skeleton
_CLIP = 4.0  # body lengths: anything further is a tracking jump, not a movement

Skeleton = Tuple[float, np.ndarray]  # (time in seconds, keypoints (18, 3): x, y, score in frame pixels)


def resample(skeletons: Sequence[Skeleton], end_s: float, frames: int = WINDOW_FRAMES,
             step_s: float = STEP_S) -> List[Optional[np.ndarray]]:
    """The skeleton nearest each step of the window ending at end_s (within half a step, else
    None): the same window whatever rate the frames came at, with gaps where none came."""
    grid: List[Optional[np.ndarray]] = []
    times = np.array([t for t, _ in skeletons]) if skeletons else np.zeros(0)
    for index in range(frames):
        moment = end_s - (frames - 1 - index) * step_s
        if len(times) == 0:
            grid.append(None)
            continue
        nearest = int(np.argmin(np.abs(times - moment)))
        grid.append(skeletons[nearest][1] if abs(times[nearest] - moment) <= step_s / 2 + 1e-6 else None)
    return grid


def body_points(keypoints: np.ndarray, min_score: float) -> Optional[np.ndarray]:
    """The 13 body points (x, y, score) with unconfident ones zeroed, or None for too few."""
    points = keypoints[list(BODY_POINTS)].astype(np.float32)
    confident = points[:, 2] >= min_score
    if int(confident.sum()) < _MIN_POINTS:
        return None
    points[~confident] = 0.0
    return points


def window_features(grid: Sequence[Optional[np.ndarray]], min_score: float) -> Optional[np.ndarray]:
    """(WINDOW_FRAMES, FEATURES) float32 for the model, or None when no step has a skeleton."""
    points = [None if kp is None else body_points(kp, min_score) for kp in grid]
    seen = [p for p in points if p is not None]
    if not seen:
        return None
    lengths = []
    for p in seen:
        xy = p[p[:, 2] > 0, :2]
        lengths.append(float(max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]))))
    scale = max(float(np.median(lengths)), 1.0)
    first = seen[0]
    hips = first[list(_HIPS)]
    hips = hips[hips[:, 2] > 0]
    origin = hips[:, :2].mean(axis=0) if len(hips) else first[first[:, 2] > 0, :2].mean(axis=0)
    out = np.zeros((len(points), FEATURES), np.float32)
    for index, p in enumerate(points):
        if p is None:
            continue
        confident = p[:, 2] > 0
        xy = np.clip((p[:, :2] - origin) / scale, -_CLIP, _CLIP)
        xy[~confident] = 0.0
        out[index, :-1] = np.concatenate([xy, p[:, 2:3]], axis=1).reshape(-1)
        out[index, -1] = 1.0
    return out

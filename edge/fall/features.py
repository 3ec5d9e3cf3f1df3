"""Pure geometry on one skeleton, and the lying score that combines the cues the fall logic reads."""


import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from edge.config import FallConfig
from edge.types import KEYPOINT_INDEX, Box

_SHOULDERS = (KEYPOINT_INDEX["left_shoulder"], KEYPOINT_INDEX["right_shoulder"])
_HIPS = (KEYPOINT_INDEX["left_hip"], KEYPOINT_INDEX["right_hip"])
_KNEES = (KEYPOINT_INDEX["left_knee"], KEYPOINT_INDEX["right_knee"])
_MIN_POINTS_FOR_EXTENT = 5


@dataclass
class PostureFeatures:
    """What one observation of a track says about its posture, in frame pixels."""

    torso_angle_deg: Optional[float]  # 0 = upright, 90 = horizontal, 180 = head down
    aspect_ratio: float  # width / height of the body's extent
    hip_y: float  # hip midpoint (or box centre) in frame pixels, y grows downwards
    torso_length: Optional[float]  # neck to hip midpoint, pixels
    extent: Box  # the confident keypoints' box, or the observation's box
    detector_fall_score: Optional[float]  # the detector's Fall score on this person, if recent
    has_skeleton: bool = False  # enough confident keypoints to outline the body (not a bare box)
    # knees below hips in the picture, in torso lengths: standing about 1, seated about 0 (the thighs
    # point sideways or at the camera); None without hips, knees and a torso
    thigh_drop: Optional[float] = None

    @property
    def has_torso(self) -> bool:
        return self.torso_angle_deg is not None


def _mean_point(keypoints: np.ndarray, indices: Sequence[int], min_score: float) -> Optional[np.ndarray]:
    points = [keypoints[i, :2] for i in indices if keypoints[i, 2] >= min_score]
    if not points:
        return None
    return np.mean(points, axis=0)


def torso_points(keypoints: np.ndarray, min_score: float) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(neck, hip midpoint): each the mean of whichever of its two joints are confident."""
    return _mean_point(keypoints, _SHOULDERS, min_score), _mean_point(keypoints, _HIPS, min_score)


def torso_angle_deg(keypoints: np.ndarray, min_score: float) -> Optional[float]:
    """Angle between the neck->hip line and the vertical: 0 upright, 90 lying, 180 head down."""
    neck, hip = torso_points(keypoints, min_score)
    if neck is None or hip is None:
        return None
    dx, dy = float(hip[0] - neck[0]), float(hip[1] - neck[1])  # dy > 0: hips below the neck
    if math.hypot(dx, dy) < 1e-6:
        return None
    return math.degrees(math.atan2(abs(dx), dy))


def torso_length(keypoints: np.ndarray, min_score: float) -> Optional[float]:
    neck, hip = torso_points(keypoints, min_score)
    if neck is None or hip is None:
        return None
    return float(np.hypot(*(hip - neck)))


def thigh_drop(keypoints: np.ndarray, hip: Optional[np.ndarray], torso: Optional[float],
               min_score: float) -> Optional[float]:
    """How far the knees are below the hips in the picture, in torso lengths: about 1 standing
    (the thighs hang down), about 0 seated, squatting or kneeling."""
    knee = _mean_point(keypoints, _KNEES, min_score)
    if hip is None or knee is None or not torso:
        return None
    return float(knee[1] - hip[1]) / torso


def outlines_body(keypoints: Optional[np.ndarray], min_score: float) -> bool:
    """Enough confident keypoints to outline the body."""
    return keypoints is not None and int(np.count_nonzero(keypoints[:, 2] >= min_score)) >= _MIN_POINTS_FOR_EXTENT


def body_extent(keypoints: Optional[np.ndarray], box: Box, min_score: float) -> Box:
    """The box around the confident keypoints, or the detector/pose box when too few are seen."""
    if keypoints is not None and outlines_body(keypoints, min_score):
        confident = keypoints[keypoints[:, 2] >= min_score, :2]
        (x1, y1), (x2, y2) = confident.min(axis=0), confident.max(axis=0)
        return Box(float(x1), float(y1), float(x2), float(y2))
    return box


def aspect_ratio(extent: Box) -> float:
    return extent.width / max(extent.height, 1.0)


def ramp(value: float, low: float, high: float) -> float:
    """0 at or below low, 1 at or above high, linear between."""
    if high <= low:
        return 1.0 if value >= high else 0.0
    return min(1.0, max(0.0, (value - low) / (high - low)))


def collapse_cue(height_ratio: float, config: FallConfig) -> float:
    """0 while the body is as tall as when the person stood, 1 once it has collapsed."""
    return ramp(-height_ratio, -config.collapse_start_ratio, -config.collapse_full_ratio)


def is_foreshortened(torso_ratio: Optional[float], config: FallConfig) -> bool:
    """The torso looks much shorter than when the person stood: it points along the camera's line
    of sight, so its angle in the image says nothing about lying or standing."""
    return torso_ratio is not None and torso_ratio < config.foreshortened_below


def descent_cue(descent: float, config: FallConfig) -> float:
    """0 while the hips are within min_descent of where the person stands, 1 at descent_full."""
    return ramp(descent, config.min_descent, config.descent_full)


def torso_upright(torso_angle: Optional[float], torso_ratio: Optional[float], config: FallConfig) -> bool:
    """A full-length torso close to vertical: sitting, kneeling or standing, not lying. (A
    foreshortened torso may look vertical while it points at the camera, so it never counts.)"""
    return (torso_angle is not None and torso_angle < config.torso_angle_low_deg
            and not is_foreshortened(torso_ratio, config))


def lying_score(torso_angle: Optional[float], aspect: Optional[float], detector_fall_score: Optional[float],
                config: FallConfig, height_ratio: Optional[float] = None,
                torso_ratio: Optional[float] = None, descent: Optional[float] = None) -> Optional[float]:
    """Weighted mean of the cues that are present; None when none is.

    No single cue is trusted alone: the torso angle is high when someone bends to the floor,
    the box is wide when someone sits with legs stretched, the detector's Fall class fires on
    deep squats, and the body is short when someone squats. Lying down makes them agree.
    height_ratio, torso_ratio and descent (hip drop in upright torso lengths) compare the body
    with the same person standing (None until they have been seen upright). A foreshortened
    torso (someone falling towards or away from the camera) keeps a near-vertical angle: its
    angle cue is left out and the detector, which sees the whole body, counts for more.
    """
    foreshortened = is_foreshortened(torso_ratio, config)
    cues = []
    if torso_angle is not None and not foreshortened:
        cues.append((config.weight_torso_angle,
                     ramp(min(torso_angle, 90.0), config.torso_angle_low_deg, config.torso_angle_high_deg)))
    if aspect is not None:
        cues.append((config.weight_aspect, ramp(aspect, config.aspect_low, config.aspect_high)))
    if detector_fall_score is not None:
        boost = config.detector_boost_foreshortened if foreshortened else 1.0
        cues.append((config.weight_detector * boost, detector_fall_score))
    if height_ratio is not None:
        cues.append((config.weight_collapse, collapse_cue(height_ratio, config)))
    if descent is not None:
        cues.append((config.weight_descent, descent_cue(descent, config)))
    total_weight = sum(weight for weight, _ in cues)
    if total_weight <= 0:
        return None
    return sum(weight * value for weight, value in cues) / total_weight


def posture_features(keypoints: Optional[np.ndarray], box: Box, detector_fall_score: Optional[float],
                     min_keypoint_score: float) -> PostureFeatures:
    extent = body_extent(keypoints, box, min_keypoint_score)
    hip = _mean_point(keypoints, _HIPS, min_keypoint_score) if keypoints is not None else None
    torso = torso_length(keypoints, min_keypoint_score) if keypoints is not None else None
    return PostureFeatures(
        torso_angle_deg=torso_angle_deg(keypoints, min_keypoint_score) if keypoints is not None else None,
        aspect_ratio=aspect_ratio(extent),
        hip_y=float(hip[1]) if hip is not None else extent.center[1],
        torso_length=torso,
        extent=extent,
        detector_fall_score=detector_fall_score,
        has_skeleton=outlines_body(keypoints, min_keypoint_score),
        thigh_drop=thigh_drop(keypoints, hip, torso, min_keypoint_score) if keypoints is not None else None,
    )

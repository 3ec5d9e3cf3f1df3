"""Draw zones, skeletons, boxes and fall states on a frame (a copy; the input is untouched)."""


from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.fall.state_machine import FallState
from edge.tracking.tracker import Track
from edge.types import KEYPOINT_INDEX, SKELETON_EDGES, FrameResult

ZONE_COLOURS: Dict[str, Tuple[int, int, int]] = {"bed": (255, 160, 60), "danger": (40, 40, 230), "watch": (0, 210, 255)}
_STATE_COLOURS: Dict[str, Tuple[int, int, int]] = {
    FallState.UNKNOWN.value: (160, 160, 160),
    FallState.UPRIGHT.value: (0, 200, 0),
    FallState.LYING.value: (0, 200, 200),
    FallState.FALLING.value: (0, 165, 255),
    FallState.DOWN.value: (0, 0, 255),
    FallState.ALARM.value: (0, 0, 255),
}


def track_labels(track: Track) -> List[str]:
    """The trace's numbers for one track, bottom line first: cues, then id, state and why."""
    cues = track.fall.trace()
    parts = []
    for key, short, fmt in (("lying_score", "lie", "{:.2f}"), ("torso_angle_deg", "", "{:.0f}deg"),
                            ("height_ratio", "h", "{:.2f}"), ("descent", "drop", "{:.2f}"),
                            ("detector_fall", "det", "{:.2f}")):
        value = cues.get(key)
        if isinstance(value, float):
            parts.append(f"{short}{'=' if short else ''}{fmt.format(value)}")
    return [" ".join(parts), f"#{track.track_id} {track.fall.why}"]


def draw_zones(canvas: np.ndarray, zones: Sequence) -> np.ndarray:
    """Each zone (config ZoneConfig: shares of the frame) as a tinted outline with its name and
    kind, drawn in place on canvas: blue beds, red danger zones, yellow watch zones."""
    if not zones:
        return canvas
    height, width = canvas.shape[:2]
    outlines = [(zone, ZONE_COLOURS.get(zone.kind, (200, 200, 200)),
                 np.array([[int(round(x * width)), int(round(y * height))] for x, y in zone.polygon], np.int32))
                for zone in zones]
    tint = canvas.copy()
    for _, colour, points in outlines:
        cv2.fillPoly(tint, [points], colour)
    cv2.addWeighted(tint, 0.25, canvas, 0.75, 0, dst=canvas)
    for zone, colour, points in outlines:
        cv2.polylines(canvas, [points], True, colour, 2, cv2.LINE_AA)
        x, y = points.min(axis=0)
        cv2.putText(canvas, f"{zone.name} ({zone.kind})", (int(x) + 4, int(y) + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    colour, 1, cv2.LINE_AA)
    return canvas


@dataclass
class DrawnTrack:
    """What is drawn of one track on one frame, copied out of the live track (which changes)."""

    box: Tuple[float, float, float, float]
    state: str
    labels: List[str]
    keypoints: Optional[np.ndarray]  # this frame's skeleton (18 x 3), or None


def drawn_tracks(result: FrameResult) -> List[DrawnTrack]:
    """The tracks of a frame as they are drawn: cheap (a few small copies), so a clip's ring
    buffer can keep them and draw later, off the frame loop."""
    out = []
    for track in (t for t in result.tracks if t.hits >= result.min_hits):
        box = track.box
        keypoints = track.keypoints_at(result.frame.time_s)
        out.append(DrawnTrack((box.x1, box.y1, box.x2, box.y2), track.fall.state.value, track_labels(track),
                              None if keypoints is None else keypoints.copy()))
    return out


def draw_frame(canvas: np.ndarray, tracks: Sequence[DrawnTrack], zones: Sequence, time_s: float,
               crops: Sequence = (), min_keypoint_score: float = 0.2, scale: float = 1.0) -> np.ndarray:
    """Zones, crops, boxes with their labels, skeletons, "FALL" and the stream time, in place.
    scale: the canvas's size against the frame the boxes and keypoints were measured on."""
    draw_zones(canvas, zones)
    for crop in crops:
        corner, far_corner = (int(crop.x1 * scale), int(crop.y1 * scale)), (int(crop.x2 * scale), int(crop.y2 * scale))
        cv2.rectangle(canvas, corner, far_corner, (90, 90, 90), 1)
    for track in tracks:
        colour = _STATE_COLOURS[track.state]
        x1, y1, x2, y2 = (int(v * scale) for v in track.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 2)
        for row, text in enumerate(track.labels):
            cv2.putText(canvas, text, (x1, max(12, y1 - 5 - 14 * row)), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, 1,
                        cv2.LINE_AA)
        if track.keypoints is not None:
            points = track.keypoints
            for start, end in SKELETON_EDGES:
                a, b = points[KEYPOINT_INDEX[start]], points[KEYPOINT_INDEX[end]]
                if a[2] >= min_keypoint_score and b[2] >= min_keypoint_score:
                    cv2.line(canvas, (int(a[0] * scale), int(a[1] * scale)), (int(b[0] * scale), int(b[1] * scale)),
                             colour, 2, cv2.LINE_AA)
            for x, y, score in points:
                if score >= min_keypoint_score:
                    cv2.circle(canvas, (int(x * scale), int(y * scale)), 3, (255, 255, 255), -1, cv2.LINE_AA)
    if any(t.state in (FallState.DOWN.value, FallState.ALARM.value) for t in tracks):
        cv2.putText(canvas, "FALL", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 255), 2, cv2.LINE_AA)
    cv2.putText(canvas, f"t={time_s:6.2f}s", (10, canvas.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def draw_result(result: FrameResult, min_keypoint_score: float = 0.2) -> np.ndarray:
    return draw_frame(result.frame.image.copy(), drawn_tracks(result), result.zones, result.frame.time_s,
                      result.crops, min_keypoint_score)

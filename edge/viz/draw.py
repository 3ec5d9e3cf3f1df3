"""Draw zones, skeletons, boxes and fall states on a frame (a copy; the input is untouched)."""


from typing import Dict, List, Sequence, Tuple

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
    tint = canvas.copy()
    for zone in zones:
        colour = ZONE_COLOURS.get(zone.kind, (200, 200, 200))
        points = np.array([[int(round(x * width)), int(round(y * height))] for x, y in zone.polygon], np.int32)
        cv2.fillPoly(tint, [points], colour)
    cv2.addWeighted(tint, 0.25, canvas, 0.75, 0, dst=canvas)
    for zone in zones:
        colour = ZONE_COLOURS.get(zone.kind, (200, 200, 200))
        points = np.array([[int(round(x * width)), int(round(y * height))] for x, y in zone.polygon], np.int32)
        cv2.polylines(canvas, [points], True, colour, 2, cv2.LINE_AA)
        x, y = points.min(axis=0)
        cv2.putText(canvas, f"{zone.name} ({zone.kind})", (int(x) + 4, int(y) + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    colour, 1, cv2.LINE_AA)
    return canvas


def draw_result(result: FrameResult, min_keypoint_score: float = 0.2) -> np.ndarray:
    canvas = draw_zones(result.frame.image.copy(), result.zones)
    for crop in result.crops:
        cv2.rectangle(canvas, (int(crop.x1), int(crop.y1)), (int(crop.x2), int(crop.y2)), (90, 90, 90), 1)
    for track in (t for t in result.tracks if t.hits >= result.min_hits):
        colour = _STATE_COLOURS[track.fall.state.value]
        box = track.box
        cv2.rectangle(canvas, (int(box.x1), int(box.y1)), (int(box.x2), int(box.y2)), colour, 2)
        for row, text in enumerate(track_labels(track)):
            cv2.putText(canvas, text, (int(box.x1), max(12, int(box.y1) - 5 - 14 * row)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.42, colour, 1, cv2.LINE_AA)
        if track.person is not None and track.person_time_s == result.frame.time_s:
            points = track.person.keypoints
            for start, end in SKELETON_EDGES:
                a, b = points[KEYPOINT_INDEX[start]], points[KEYPOINT_INDEX[end]]
                if a[2] >= min_keypoint_score and b[2] >= min_keypoint_score:
                    cv2.line(canvas, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), colour, 2, cv2.LINE_AA)
            for x, y, score in points:
                if score >= min_keypoint_score:
                    cv2.circle(canvas, (int(x), int(y)), 3, (255, 255, 255), -1, cv2.LINE_AA)
    if any(t.fall.state in (FallState.DOWN, FallState.ALARM) for t in result.tracks):
        cv2.putText(canvas, "FALL", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 255), 2, cv2.LINE_AA)
    cv2.putText(canvas, f"t={result.frame.time_s:6.2f}s", (10, canvas.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas

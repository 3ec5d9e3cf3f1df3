"""A camera's zones in its picture: where a body is against them.

Zones are stored as shares of the frame (config `zones`); points from the models are pixels,
so every test divides by the frame's size first. A body is judged by its own points, not its
box: the torso (neck and hip midpoints) for beds and watch zones, the feet for danger zones.
"""


from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edge.config import ZoneConfig
from edge.fall.features import torso_points
from edge.geometry import Point, point_in_polygon
from edge.types import KEYPOINT_INDEX, Box

_ANKLES = (KEYPOINT_INDEX["left_ankle"], KEYPOINT_INDEX["right_ankle"])


def ground_point(keypoints: Optional[np.ndarray], box: Box, min_score: float) -> Point:
    """Where a person stands, pixels: between the confident ankles, else the middle of the box's
    bottom edge (a bare detector box, or feet hidden)."""
    if keypoints is not None:
        ankles = [keypoints[i, :2] for i in _ANKLES if keypoints[i, 2] >= min_score]
        if ankles:
            x, y = np.mean(ankles, axis=0)
            return float(x), float(y)
    return (box.x1 + box.x2) / 2.0, box.y2


def body_points(keypoints: Optional[np.ndarray], box: Box, min_score: float) -> List[Point]:
    """The torso's points, pixels: neck and hip midpoints where confident; else the box's centre."""
    if keypoints is not None:
        found = [(float(p[0]), float(p[1])) for p in torso_points(keypoints, min_score) if p is not None]
        if found:
            return found
    return [box.center]


def to_shares(point: Point, frame_size: Tuple[int, int]) -> Point:
    width, height = frame_size
    return point[0] / max(width, 1), point[1] / max(height, 1)


def _torso_shares(keypoints: Optional[np.ndarray], box: Box, frame_size: Tuple[int, int],
                  min_score: float) -> List[Point]:
    return [to_shares(p, frame_size) for p in body_points(keypoints, box, min_score)]


@dataclass
class ZoneSet:
    """One camera's zones, by kind."""

    zones: Sequence[ZoneConfig]

    def of_kind(self, kind: str) -> List[ZoneConfig]:
        return [zone for zone in self.zones if zone.kind == kind]

    @property
    def has_beds(self) -> bool:
        return bool(self.of_kind("bed"))

    def in_bed(self, keypoints: Optional[np.ndarray], box: Box, frame_size: Tuple[int, int],
               min_score: float) -> Optional[bool]:
        """True when any point of the torso lies in a bed zone, False when every one is outside them
        all (a body half on the mattress is still in bed), None without bed zones."""
        beds = self.of_kind("bed")
        if not beds:
            return None
        points = _torso_shares(keypoints, box, frame_size, min_score)
        return any(point_in_polygon(p, bed.polygon) for p in points for bed in beds)

    def watched(self, keypoints: Optional[np.ndarray], box: Box, frame_size: Tuple[int, int],
                min_score: float) -> Optional[str]:
        """The watch zone a body is in (by its torso's points): its name; "" when there are no
        watch zones (everywhere is watched); None when it is outside all of them."""
        watches = self.of_kind("watch")
        if not watches:
            return ""
        points = _torso_shares(keypoints, box, frame_size, min_score)
        return next((zone.name for zone in watches for p in points if point_in_polygon(p, zone.polygon)), None)

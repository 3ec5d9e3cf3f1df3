"""Keypoint sequences for the state machine tests: a simple articulated body, posed by angles.

The body is drawn in pixels with y growing downwards, like camera frames. Only geometry is
synthetic here; the feature code and the state machine that read it are the real ones.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

from edge.types import KEYPOINT_INDEX, Box

HEIGHT = 300.0  # standing height in pixels
FOOT_Y = 420.0
CENTRE_X = 320.0


def _rotate(point: Tuple[float, float], pivot: Tuple[float, float], degrees: float) -> Tuple[float, float]:
    """Rotate a point about a pivot; positive degrees tip the top of the body to the right."""
    rad = math.radians(degrees)
    dx, dy = point[0] - pivot[0], point[1] - pivot[1]
    return (pivot[0] + dx * math.cos(rad) - dy * math.sin(rad), pivot[1] + dx * math.sin(rad) + dy * math.cos(rad))


def pose(body_tilt_deg: float = 0.0, torso_bend_deg: float = 0.0, hip_drop: float = 0.0,
         knee_forward: float = 0.0, centre_x: float = CENTRE_X, score: float = 0.8,
         toward_camera: float = 0.0, foot_y: float = FOOT_Y, scale: float = 1.0) -> np.ndarray:
    """18 keypoints (x, y, score).

    body_tilt_deg: the whole body rotated about the ankles (a fall tips over like this).
    torso_bend_deg: the upper body bent forward at the hips (bending to the floor).
    hip_drop: hips lowered by this share of the height, legs folding (sitting, squatting).
    knee_forward: knees pushed forward by this share of the height (sitting).
    toward_camera: the body tipped along the camera's line of sight, 0 (standing) to 1 (flat):
        seen from a high camera the body keeps its vertical torso in the image but its height
        shrinks towards the feet (to a third at about 0.67).
    foot_y: where the feet stand in the image.
    scale: the body's size against HEIGHT, about the feet (someone nearer the camera looks bigger).
    """
    h = HEIGHT
    ankle = (centre_x, FOOT_Y)
    hip_y = FOOT_Y - 0.5 * h + hip_drop * h
    knee = (centre_x + knee_forward * h, (FOOT_Y + hip_y) / 2 - (knee_forward * h * 0.3))
    hip = (centre_x, hip_y)
    torso = {  # upper body relative to the hip centre, before bending
        "neck": (0.0, -0.3 * h), "nose": (0.0, -0.42 * h), "left_eye": (-0.02 * h, -0.44 * h),
        "right_eye": (0.02 * h, -0.44 * h), "left_ear": (-0.04 * h, -0.43 * h), "right_ear": (0.04 * h, -0.43 * h),
        "left_shoulder": (-0.1 * h, -0.3 * h), "right_shoulder": (0.1 * h, -0.3 * h),
        "left_elbow": (-0.12 * h, -0.15 * h), "right_elbow": (0.12 * h, -0.15 * h),
        "left_wrist": (-0.12 * h, 0.0), "right_wrist": (0.12 * h, 0.0),
    }
    points = {}
    for name, (dx, dy) in torso.items():
        points[name] = _rotate((hip[0] + dx, hip[1] + dy), hip, torso_bend_deg)
    points["left_hip"], points["right_hip"] = (hip[0] - 0.07 * h, hip[1]), (hip[0] + 0.07 * h, hip[1])
    points["left_knee"], points["right_knee"] = (knee[0] - 0.06 * h, knee[1]), (knee[0] + 0.06 * h, knee[1])
    points["left_ankle"], points["right_ankle"] = (ankle[0] - 0.06 * h, ankle[1]), (ankle[0] + 0.06 * h, ankle[1])
    keypoints = np.zeros((18, 3), np.float32)
    for name, xy in points.items():
        x, y = _rotate(xy, ankle, body_tilt_deg)
        y = FOOT_Y + (y - FOOT_Y) * (1.0 - toward_camera)  # foreshortened towards the feet
        keypoints[KEYPOINT_INDEX[name]] = (centre_x + (x - centre_x) * scale, foot_y + (y - FOOT_Y) * scale, score)
    return keypoints


def box_of(keypoints: np.ndarray) -> Box:
    (x1, y1), (x2, y2) = keypoints[:, :2].min(axis=0), keypoints[:, :2].max(axis=0)
    return Box(float(x1), float(y1), float(x2), float(y2))


def ramp(seconds: float, fps: float, **ends) -> List[dict]:
    """Pose arguments moving linearly from 0 to the given values over `seconds`."""
    steps = max(1, int(round(seconds * fps)))
    return [{key: value * (i + 1) / steps for key, value in ends.items()} for i in range(steps)]


def hold(seconds: float, fps: float, **values) -> List[dict]:
    return [dict(values) for _ in range(int(round(seconds * fps)))]

"""Decode MoveNet MultiPose output [1, 6, 56] into people with the 18-point skeleton."""


from typing import List

import numpy as np

from edge.decoding.letterbox import Letterbox
from edge.types import KEYPOINT_INDEX, Box, Person

MOVENET_KEYPOINTS = 17
MOVENET_ROW = MOVENET_KEYPOINTS * 3 + 5  # 17 x (y, x, score), then ymin, xmin, ymax, xmax, score


def add_neck(coco17: np.ndarray) -> np.ndarray:
    """COCO-17 (x, y, score) -> 18 points with the neck as the shoulder midpoint (trt_pose's layout)."""
    left, right = coco17[KEYPOINT_INDEX["left_shoulder"]], coco17[KEYPOINT_INDEX["right_shoulder"]]
    neck = np.array([(left[0] + right[0]) / 2, (left[1] + right[1]) / 2, min(left[2], right[2])],
                    dtype=np.float32)
    return np.vstack([coco17.astype(np.float32), neck[None, :]])


def decode_movenet(output: np.ndarray, input_size: int, transform: Letterbox,
                   min_person_score: float, min_keypoint_score: float) -> List[Person]:
    """People in frame pixels. The box is the union of the model's box and its confident keypoints."""
    rows = np.asarray(output, dtype=np.float32).reshape(-1, MOVENET_ROW)
    people: List[Person] = []
    for row in rows:
        score = float(row[55])
        if score < min_person_score:
            continue
        yxs = row[:51].reshape(MOVENET_KEYPOINTS, 3)
        xy_input = np.stack([yxs[:, 1], yxs[:, 0]], axis=1) * input_size
        xy_frame = transform.to_frame_xy(xy_input)
        keypoints = add_neck(np.concatenate([xy_frame, yxs[:, 2:3]], axis=1))
        ymin, xmin, ymax, xmax = row[51:55]
        corners = transform.to_frame_xy(np.array([[xmin, ymin], [xmax, ymax]], dtype=np.float32) * input_size)
        confident = keypoints[keypoints[:, 2] >= min_keypoint_score, :2]
        if len(confident):
            corners = np.vstack([corners, confident.min(axis=0), confident.max(axis=0)])
        x1, y1 = corners.min(axis=0)
        x2, y2 = corners.max(axis=0)
        people.append(Person(box=Box(float(x1), float(y1), float(x2), float(y2)), score=score,
                             keypoints=keypoints))
    return people

"""Decode YOLO heads (v8 [1, 4+nc, N] and v5 [1, N, 5+nc]) and run class-aware NMS."""


from typing import List, Sequence

import numpy as np

from edge.decoding.letterbox import Letterbox
from edge.geometry import nms
from edge.types import Box, Detection


def detect_layout(output: np.ndarray, num_classes: int) -> str:
    """'yolov8' for [1, 4+nc, N], 'yolov5' for [1, N, 5+nc]."""
    if output.ndim != 3 or output.shape[0] != 1:
        raise ValueError(f"YOLO output must be [1, a, b], got {list(output.shape)}")
    _, a, b = output.shape
    if a == 4 + num_classes and b != 4 + num_classes:
        return "yolov8"
    if b == 5 + num_classes and a != 5 + num_classes:
        return "yolov5"
    if a == 4 + num_classes:
        return "yolov8"
    raise ValueError(
        f"YOLO output {list(output.shape)} fits neither yolov8 [1,{4 + num_classes},N] nor "
        f"yolov5 [1,N,{5 + num_classes}] for {num_classes} classes: check class_names"
    )


def candidates(output: np.ndarray, num_classes: int, layout: str) -> np.ndarray:
    """Rows of (cx, cy, w, h, class scores...) in model-input pixels, objectness folded in."""
    if layout == "yolov8":
        rows = output[0].T  # [N, 4+nc]
        return np.ascontiguousarray(rows, dtype=np.float32)
    if layout == "yolov5":
        rows = output[0].astype(np.float32)  # [N, 5+nc]
        scores = rows[:, 5:] * rows[:, 4:5]
        return np.concatenate([rows[:, :4], scores], axis=1)
    raise ValueError(f"unknown YOLO layout '{layout}': use yolov8, yolov5 or auto")


def decode_yolo(output: np.ndarray, class_names: Sequence[str], transform: Letterbox, layout: str,
                score_threshold: float, iou_threshold: float, frame_w: int, frame_h: int,
                max_detections: int = 100) -> List[Detection]:
    """Boxes in frame pixels, after class-aware NMS (a Fall box does not suppress a Normal one)."""
    num_classes = len(class_names)
    if layout == "auto":
        layout = detect_layout(output, num_classes)
    rows = candidates(output, num_classes, layout)
    class_scores = rows[:, 4:4 + num_classes]
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(rows)), class_ids]
    mask = scores >= score_threshold
    if not mask.any():
        return []
    rows, class_ids, scores, class_scores = rows[mask], class_ids[mask], scores[mask], class_scores[mask]
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    corners = transform.to_frame_xy(corners.reshape(-1, 2, 2)).reshape(-1, 4)
    corners[:, [0, 2]] = corners[:, [0, 2]].clip(0, frame_w)
    corners[:, [1, 3]] = corners[:, [1, 3]].clip(0, frame_h)
    # Class-aware NMS in one pass: shift each class's boxes far apart so they never overlap.
    shifted = corners + (class_ids.astype(np.float32) * (max(frame_w, frame_h) + 1.0))[:, None]
    keep = nms(shifted, scores, iou_threshold)[:max_detections]
    return [
        Detection(box=Box(*map(float, corners[i])), score=float(scores[i]), class_id=int(class_ids[i]),
                  label=str(class_names[class_ids[i]]),
                  class_scores=tuple(float(v) for v in class_scores[i]))
        for i in keep
    ]

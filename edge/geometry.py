"""Box geometry shared by decoding, tracking, the pipeline and the build's comparisons: boxes as
arrays, IoU of every pair, greedy non-maximum suppression, the gap between two boxes."""


from typing import List, Sequence

import numpy as np

from edge.types import Box


def boxes_array(boxes: Sequence[Box]) -> np.ndarray:
    """[N, 4] float64 (x1, y1, x2, y2), the input iou_matrix takes; [0, 4] for no boxes."""
    return np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], dtype=np.float64).reshape(-1, 4)


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [N,4] against every box in b [M,4] (x1, y1, x2, y2)."""
    tl = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    br = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> List[int]:
    """Greedy non-maximum suppression; returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    keep: List[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        overlaps = iou_matrix(boxes[best:best + 1], boxes[order[1:]])[0]
        order = order[1:][overlaps <= iou_threshold]
    return keep


def box_gap(a: Box, b: Box) -> float:
    """The shortest distance between two boxes along either axis, pixels; 0 when they overlap."""
    gap_x = max(0.0, max(a.x1, b.x1) - min(a.x2, b.x2))
    gap_y = max(0.0, max(a.y1, b.y1) - min(a.y2, b.y2))
    return max(gap_x, gap_y)


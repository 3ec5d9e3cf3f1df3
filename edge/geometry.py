"""Geometry shared by decoding, tracking, zones, the config's checks, the pipeline and the build's
comparisons: boxes as arrays, IoU of every pair, greedy non-maximum suppression, the gap between
two boxes; polygons (a point inside, self-intersection, when a moving point enters)."""


from typing import List, Optional, Sequence, Tuple

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


Point = Tuple[float, float]


def point_in_polygon(point: Point, polygon: Sequence[Sequence[float]]) -> bool:
    """Whether a point lies inside a simple polygon (even-odd ray casting; a point exactly on an
    edge may fall either way)."""
    x, y = point
    inside = False
    count = len(polygon)
    for index in range(count):
        x1, y1 = polygon[index][0], polygon[index][1]
        x2, y2 = polygon[(index + 1) % count][0], polygon[(index + 1) % count][1]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _orientation(a: Point, b: Point, c: Point) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _on_segment(a: Point, b: Point, c: Point) -> bool:
    """c, collinear with a-b, lies on that segment."""
    return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])


def segments_touch(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Segments a-b and c-d cross or touch."""
    d1, d2, d3, d4 = _orientation(c, d, a), _orientation(c, d, b), _orientation(a, b, c), _orientation(a, b, d)
    if ((d1 > 0) != (d2 > 0) and d1 != 0 and d2 != 0) and ((d3 > 0) != (d4 > 0) and d3 != 0 and d4 != 0):
        return True
    return ((d1 == 0 and _on_segment(c, d, a)) or (d2 == 0 and _on_segment(c, d, b))
            or (d3 == 0 and _on_segment(a, b, c)) or (d4 == 0 and _on_segment(a, b, d)))


def polygon_area(polygon: Sequence[Sequence[float]]) -> float:
    """The unsigned area (shoelace)."""
    count = len(polygon)
    twice = sum(polygon[i][0] * polygon[(i + 1) % count][1] - polygon[(i + 1) % count][0] * polygon[i][1]
                for i in range(count))
    return abs(twice) / 2.0


def self_intersecting(polygon: Sequence[Sequence[float]]) -> bool:
    """Two edges that are not neighbours cross or touch (a figure eight, a repeated point), or
    neighbours fold back over each other."""
    points = [(float(p[0]), float(p[1])) for p in polygon]
    count = len(points)
    edges = [(points[i], points[(i + 1) % count]) for i in range(count)]
    for i in range(count):
        for j in range(i + 1, count):
            neighbours = j == i + 1 or (i == 0 and j == count - 1)
            (a, b), (c, d) = edges[i], edges[j]
            if not neighbours:
                if segments_touch(a, b, c, d):
                    return True
                continue
            # neighbours share one point; folding back along each other is a crossing too
            shared, far_i, far_j = (b, a, d) if j == i + 1 else (a, b, c)
            to_i = (far_i[0] - shared[0], far_i[1] - shared[1])
            to_j = (far_j[0] - shared[0], far_j[1] - shared[1])
            if _orientation(far_i, shared, far_j) == 0 and to_i[0] * to_j[0] + to_i[1] * to_j[1] > 0:
                return True
    return False


def time_to_enter(point: Point, velocity: Point, polygon: Sequence[Sequence[float]],
                  horizon_s: float) -> Optional[float]:
    """Seconds until a point moving at a constant velocity is inside the polygon, if within
    horizon_s: 0 when it already is, None when it would not get there in time."""
    if point_in_polygon(point, polygon):
        return 0.0
    end = (point[0] + velocity[0] * horizon_s, point[1] + velocity[1] * horizon_s)
    first: Optional[float] = None
    count = len(polygon)
    for index in range(count):
        a = (float(polygon[index][0]), float(polygon[index][1]))
        b = (float(polygon[(index + 1) % count][0]), float(polygon[(index + 1) % count][1]))
        crossing = _segment_parameter(point, end, a, b)
        if crossing is not None and (first is None or crossing < first):
            first = crossing
    return None if first is None else first * horizon_s


def _segment_parameter(p: Point, q: Point, a: Point, b: Point) -> Optional[float]:
    """Where p-q meets a-b, as a share of the way from p to q (0-1); None if they do not meet."""
    run = (q[0] - p[0], q[1] - p[1])
    edge = (b[0] - a[0], b[1] - a[1])
    denominator = run[0] * edge[1] - run[1] * edge[0]
    if denominator == 0:
        return None  # parallel: a run along an edge enters through a neighbouring edge
    offset = (a[0] - p[0], a[1] - p[1])
    along_run = (offset[0] * edge[1] - offset[1] * edge[0]) / denominator
    along_edge = (offset[0] * run[1] - offset[1] * run[0]) / denominator
    return along_run if 0 <= along_run <= 1 and 0 <= along_edge <= 1 else None

"""Turn trt_pose's outputs (part confidence maps and part affinity fields) into people.

cmap: [18, H, W], one map per part, in the 18-point order of edge.types (COCO-17 + neck).
paf:  [42, H, W], two channels per limb of TRT_POSE_LIMBS: channel 2k is the limb's row (y)
      component and 2k+1 its column (x) component, pointing from part a to part b.

The steps follow trt_pose's parser (written here in numpy, so no compiled plugin is needed):
1. peaks: pixels above a threshold that are the maximum of their window;
2. sub-pixel refinement: the cmap-weighted mean position over the same window;
3. every candidate pair of each limb is scored by the mean dot product between the limb's
   unit direction and the PAF, sampled along the segment (a line integral);
4. per limb, a maximum-score one-to-one assignment (Hungarian) above a link threshold;
5. parts joined by assigned links form one person (connected components over the graph).
"""


from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.decoding.letterbox import Letterbox
from edge.types import NUM_KEYPOINTS, Box, Person

# trt_pose's human_pose.json skeleton, 0-based part indices (a, b); limb k uses PAF channels 2k, 2k+1.
TRT_POSE_LIMBS: Tuple[Tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1),
    (0, 2), (1, 3), (2, 4), (3, 5), (4, 6), (17, 0), (17, 5), (17, 6), (17, 11), (17, 12),
)
PAF_CHANNELS = 2 * len(TRT_POSE_LIMBS)


@dataclass
class ParseSettings:
    cmap_threshold: float = 0.1  # a part peak must reach this confidence
    link_threshold: float = 0.1  # a limb's mean PAF alignment must exceed this
    window: int = 5  # peak window and refinement window, in map pixels (odd)
    line_samples: int = 7  # points sampled along a candidate limb
    max_parts: int = 100  # peaks kept per part
    max_people: int = 100


def find_peaks(part_map: np.ndarray, threshold: float, window: int, max_peaks: int) -> np.ndarray:
    """(row, col) integer peaks of one map, in row-major order: above threshold and no larger
    value within the window around them. Exact ties (a part centred on a pixel border) keep
    only the first pixel in row-major order, where trt_pose keeps both."""
    height, width = part_map.shape
    half = window // 2
    # A tie-breaker far below any real difference in confidence: earlier pixels win ties.
    keyed = part_map.astype(np.float64) - np.arange(height * width).reshape(height, width) * (1e-9 / (height * width))
    padded = np.pad(keyed, half, mode="constant", constant_values=-np.inf)
    # The window maximum by shifting: windows are tiny (5x5), so this is 25 vectorised maxima.
    window_max = np.full_like(keyed, -np.inf)
    for dy in range(window):
        for dx in range(window):
            np.maximum(window_max, padded[dy:dy + height, dx:dx + width], out=window_max)
    rows, cols = np.nonzero((part_map >= threshold) & (keyed >= window_max))
    return np.stack([rows, cols], axis=1)[:max_peaks]


def refine_peaks(part_map: np.ndarray, peaks: np.ndarray, window: int) -> np.ndarray:
    """Sub-pixel (y, x) of each peak, normalised to [0, 1]: the map-weighted mean position over the
    window (indices outside the map are mirrored, positions are not), plus half a pixel."""
    height, width = part_map.shape
    half = window // 2
    offsets = np.arange(-half, half + 1)
    refined = np.zeros((len(peaks), 2), dtype=np.float32)
    for n, (row, col) in enumerate(peaks):
        rows = row + offsets
        cols = col + offsets
        weights = part_map[np.ix_(_reflect(rows, height), _reflect(cols, width))]
        total = float(weights.sum())
        if total <= 0:
            y, x = float(row), float(col)
        else:
            y = float((weights.sum(axis=1) * rows).sum()) / total
            x = float((weights.sum(axis=0) * cols).sum()) / total
        refined[n] = ((y + 0.5) / height, (x + 0.5) / width)
    return refined


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    index = np.where(index < 0, -index, index)
    return np.where(index >= size, 2 * size - index - 2, index)


def paf_scores(paf_y: np.ndarray, paf_x: np.ndarray, peaks_a: np.ndarray, peaks_b: np.ndarray,
               samples: int) -> np.ndarray:
    """[len(a), len(b)] mean alignment of the PAF with each segment a->b (normalised peaks).
    Samples outside the map add nothing, which weakens limbs that leave the image."""
    height, width = paf_y.shape
    scores = np.zeros((len(peaks_a), len(peaks_b)), dtype=np.float32)
    if not len(peaks_a) or not len(peaks_b):
        return scores
    scale = np.array([height, width], dtype=np.float32)
    start = peaks_a[:, None, :] * scale  # [A, 1, 2] in map pixels
    vector = peaks_b[None, :, :] * scale - start  # [A, B, 2]
    unit = vector / (np.linalg.norm(vector, axis=2, keepdims=True) + 1e-5)
    progress = np.linspace(0.0, 1.0, samples, dtype=np.float32)
    points = start[:, :, None, :] + progress[None, None, :, None] * vector[:, :, None, :]  # [A, B, S, 2]
    cells = points.astype(np.int32)  # truncation, as trt_pose does; centres are at +0.5
    inside = (points[..., 0] >= 0) & (points[..., 1] >= 0) & (cells[..., 0] < height) & (cells[..., 1] < width)
    rows = np.clip(cells[..., 0], 0, height - 1)
    cols = np.clip(cells[..., 1], 0, width - 1)
    dots = paf_y[rows, cols] * unit[:, :, None, 0] + paf_x[rows, cols] * unit[:, :, None, 1]
    scores[:] = np.where(inside, dots, 0.0).sum(axis=2) / samples
    return scores


def assign_limb(scores: np.ndarray, threshold: float) -> List[Tuple[int, int]]:
    """The one-to-one pairs (a, b) that maximise the total score, keeping those above threshold."""
    if scores.size == 0:
        return []
    rows, cols = linear_sum_assignment(scores, maximize=True)
    return [(int(a), int(b)) for a, b in zip(rows, cols) if scores[a, b] > threshold]


def connect_parts(links: Dict[int, List[Tuple[int, int]]], peak_counts: Sequence[int],
                  limbs: Sequence[Tuple[int, int]], max_people: int) -> List[Dict[int, int]]:
    """People as {part: peak index}: each connected component of the graph whose nodes are
    (part, peak) and whose edges are the assigned links. Parts are visited in order, so a
    lone peak (no links) is a person of one part, as in trt_pose; callers filter those."""
    neighbours: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
    for limb_index, pairs in links.items():
        part_a, part_b = limbs[limb_index]
        for peak_a, peak_b in pairs:
            neighbours.setdefault((part_a, peak_a), []).append((part_b, peak_b))
            neighbours.setdefault((part_b, peak_b), []).append((part_a, peak_a))
    visited = set()
    people: List[Dict[int, int]] = []
    for part, count in enumerate(peak_counts):
        for peak in range(count):
            if len(people) >= max_people:
                return people
            if (part, peak) in visited:
                continue
            person: Dict[int, int] = {}
            queue = deque([(part, peak)])
            while queue:
                node = queue.popleft()
                if node in visited:
                    continue
                visited.add(node)
                # Two peaks of one part in a component (a bad link) keep the first one reached.
                person.setdefault(node[0], node[1])
                queue.extend(neighbours.get(node, ()))
            people.append(person)
    return people


def parse_trt_pose(cmap: np.ndarray, paf: np.ndarray, settings: Optional[ParseSettings] = None,
                   min_parts: int = 3) -> List[np.ndarray]:
    """People as [18, 3] arrays of (x, y, score), x and y normalised to [0, 1] of the model input;
    missing parts are (0, 0, 0). cmap [18, H, W] or [1, 18, H, W]; paf [42, H, W] or [1, 42, H, W]."""
    settings = settings or ParseSettings()
    cmap = np.asarray(cmap, dtype=np.float32).reshape(-1, *np.shape(cmap)[-2:])
    paf = np.asarray(paf, dtype=np.float32).reshape(-1, *np.shape(paf)[-2:])
    if cmap.shape[0] != NUM_KEYPOINTS or paf.shape[0] != PAF_CHANNELS or cmap.shape[1:] != paf.shape[1:]:
        raise ValueError(f"trt_pose outputs must be cmap [{NUM_KEYPOINTS},H,W] and paf [{PAF_CHANNELS},H,W]; "
                         f"got {list(cmap.shape)} and {list(paf.shape)}")
    peaks = [find_peaks(part_map, settings.cmap_threshold, settings.window, settings.max_parts) for part_map in cmap]
    refined = [refine_peaks(part_map, part_peaks, settings.window) for part_map, part_peaks in zip(cmap, peaks)]
    links: Dict[int, List[Tuple[int, int]]] = {}
    for limb_index, (part_a, part_b) in enumerate(TRT_POSE_LIMBS):
        scores = paf_scores(paf[2 * limb_index], paf[2 * limb_index + 1], refined[part_a], refined[part_b],
                            settings.line_samples)
        links[limb_index] = assign_limb(scores, settings.link_threshold)
    people = []
    for person in connect_parts(links, [len(p) for p in peaks], TRT_POSE_LIMBS, settings.max_people):
        if len(person) < min_parts:
            continue
        keypoints = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
        for part, peak in person.items():
            y, x = refined[part][peak]
            row, col = peaks[part][peak]
            keypoints[part] = (x, y, cmap[part, row, col])
        people.append(keypoints)
    return people


def decode_trt_pose(cmap: np.ndarray, paf: np.ndarray, input_size: int, transform: Letterbox,
                    settings: ParseSettings, min_keypoint_score: float) -> List[Person]:
    """People in frame pixels; the box spans the confident keypoints, the score is their mean."""
    people: List[Person] = []
    for keypoints in parse_trt_pose(cmap, paf, settings):
        scores = keypoints[:, 2]
        xy = transform.to_frame_xy(keypoints[:, :2] * input_size)
        xy[scores == 0] = 0.0  # parts not found stay (0, 0, 0)
        confident = xy[scores >= min_keypoint_score]
        if len(confident) < 2:
            continue
        (x1, y1), (x2, y2) = confident.min(axis=0), confident.max(axis=0)
        people.append(Person(box=Box(float(x1), float(y1), float(x2), float(y2)),
                             score=float(scores[scores > 0].mean()),
                             keypoints=np.concatenate([xy, scores[:, None]], axis=1).astype(np.float32)))
    return people

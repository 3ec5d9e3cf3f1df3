"""`fall-edge compare-detectors`: what a quantized detector changes, next to the float one, on
real video frames: speed per frame and the detections that appear, vanish or move (a
benchmark that prints figures, never a test)."""


import logging
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from edge.capture.opencv_source import iter_video_frames
from edge.config import DetectorConfig
from edge.geometry import boxes_array, iou_matrix
from edge.perception import Detector
from edge.types import Detection

logger = logging.getLogger(__name__)


def match(reference: List[Detection], candidate: List[Detection], min_iou: float = 0.5) -> List[tuple]:
    """Greedy pairs (reference, candidate) of the same class with IoU >= min_iou, best first."""
    if not reference or not candidate:
        return []
    ious = iou_matrix(boxes_array([d.box for d in reference]), boxes_array([d.box for d in candidate]))
    pairs = []
    used_r, used_c = set(), set()
    for flat in np.argsort(-ious, axis=None):
        r, c = np.unravel_index(flat, ious.shape)
        if ious[r, c] < min_iou:
            break
        if r in used_r or c in used_c or reference[r].class_id != candidate[c].class_id:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((reference[r], candidate[c], float(ious[r, c])))
    return pairs


def compare_detectors(reference_model: Path, candidate_model: Path, videos: Sequence[Path], every_n: int,
                      config: DetectorConfig) -> Dict[str, object]:
    reference = Detector.from_config(replace(config, model=str(reference_model)), reference_model)
    candidate = Detector.from_config(replace(config, model=str(candidate_model)), candidate_model)
    times: Dict[str, List[float]] = {"reference": [], "candidate": []}
    counts = {"frames": 0, "reference": 0, "candidate": 0, "matched": 0, "reference_fall": 0, "candidate_fall": 0,
              "matched_fall": 0}
    score_diffs: List[float] = []
    ious: List[float] = []
    for video in videos:
        for frame in iter_video_frames(video, every_n):
            found = {}
            for name, detector in (("reference", reference), ("candidate", candidate)):
                started = time.perf_counter()
                found[name] = detector.detect(frame)
                times[name].append(time.perf_counter() - started)
                counts[name] += len(found[name])
                counts[f"{name}_fall"] += sum(d.label == config.fall_class for d in found[name])
            pairs = match(found["reference"], found["candidate"])
            counts["matched"] += len(pairs)
            counts["matched_fall"] += sum(r.label == config.fall_class for r, _, _ in pairs)
            score_diffs += [abs(r.score - c.score) for r, c, _ in pairs]
            ious += [iou for _, _, iou in pairs]
            counts["frames"] += 1
        logger.info(f"{video}: {counts['frames']} frames so far")
    return {
        **counts,
        "reference_ms_median": round(1000 * statistics.median(times["reference"]), 1),
        "candidate_ms_median": round(1000 * statistics.median(times["candidate"]), 1),
        "matched_share_of_reference": round(counts["matched"] / max(1, counts["reference"]), 3),
        "score_abs_diff_median": round(statistics.median(score_diffs), 4) if score_diffs else None,
        "matched_iou_median": round(statistics.median(ious), 3) if ious else None,
    }

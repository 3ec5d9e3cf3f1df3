"""Does an INT8 model agree with its full-precision reference? Measured on frames, no ground
truth needed, so it runs on the installer's Jetson right after an INT8 build (the held-back
share of the calibration frames) and here on an ONNX Runtime pair (`fall-edge int8-agreement`).

Pose: both models' skeletons, people paired by keypoint distance; PCK at 0.1 of the reference
person's torso length (neck to hip midpoint) over the reference's visible keypoints, a person
the candidate misses counting all of theirs as wrong; and how often the person counts differ.
Detector: boxes paired as `fall-edge compare-detectors` does (same class, IoU >= 0.5); the share
of the reference's boxes found, the median IoU and the median change of the fall score.
"""


import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.config import DetectorConfig, PoseConfig
from edge.export.compare import match
from edge.fall.features import torso_length
from edge.types import Detection, Person

PCK_FRACTION = 0.1  # of the torso length: a keypoint this close to the reference's agrees
_UNPAIRED = 1e9


@dataclass
class Agreement:
    kind: str  # pose | detector
    frames: int
    score: float  # the figure held against the floor: PCK (pose) or the share of boxes found (detector)
    reference_found: int  # people or boxes
    candidate_found: int
    # pose
    frames_with_other_count: int = 0
    # detector
    iou_median: Optional[float] = None
    fall_score_change_median: Optional[float] = None

    def passes(self, floor: float) -> bool:
        return self.score >= floor

    def line(self) -> str:
        if self.kind == "pose":
            return (f"pose agreement on {self.frames} frames: PCK@{PCK_FRACTION:g} {self.score:.3f}, people "
                    f"{self.reference_found} reference / {self.candidate_found} INT8, count differs on "
                    f"{self.frames_with_other_count} frames")
        iou = "n/a" if self.iou_median is None else f"{self.iou_median:.3f}"
        change = "n/a" if self.fall_score_change_median is None else f"{self.fall_score_change_median:.4f}"
        return (f"detector agreement on {self.frames} frames: {self.score:.3f} of {self.reference_found} reference "
                f"boxes found by INT8 ({self.candidate_found} boxes), median IoU {iou}, median fall-score change "
                f"{change}")

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _distance(reference: Person, candidate: Person, min_score: float) -> float:
    both = (reference.keypoints[:, 2] >= min_score) & (candidate.keypoints[:, 2] >= min_score)
    if not both.any():
        return _UNPAIRED
    return float(np.linalg.norm(reference.keypoints[both, :2] - candidate.keypoints[both, :2], axis=1).mean())


def pose_frame(reference: List[Person], candidate: List[Person], min_score: float) -> tuple:
    """(keypoints agreeing, reference keypoints counted) for one frame."""
    pairs: Dict[int, int] = {}
    if reference and candidate:
        costs = np.array([[_distance(r, c, min_score) for c in candidate] for r in reference])
        for row, column in zip(*linear_sum_assignment(costs)):
            if costs[row, column] < _UNPAIRED:
                pairs[int(row)] = int(column)
    agreeing = counted = 0
    for index, person in enumerate(reference):
        torso = torso_length(person.keypoints, min_score)
        if not torso:
            continue  # no scale to judge by
        visible = person.keypoints[:, 2] >= min_score
        counted += int(visible.sum())
        if index not in pairs:
            continue
        other = candidate[pairs[index]].keypoints
        close = np.linalg.norm(person.keypoints[:, :2] - other[:, :2], axis=1) <= PCK_FRACTION * torso
        agreeing += int((visible & (other[:, 2] >= min_score) & close).sum())
    return agreeing, counted


def pose_agreement(frames: Iterable[np.ndarray], reference: Any, candidate: Any, min_score: float) -> Agreement:
    """`reference` and `candidate`: edge.perception.PoseEstimator (any backend)."""
    agreeing = counted = count_differs = frames_seen = found_reference = found_candidate = 0
    for image in frames:
        people_reference, people_candidate = reference.estimate(image), candidate.estimate(image)
        good, total = pose_frame(people_reference, people_candidate, min_score)
        agreeing, counted = agreeing + good, counted + total
        count_differs += len(people_reference) != len(people_candidate)
        found_reference += len(people_reference)
        found_candidate += len(people_candidate)
        frames_seen += 1
    score = agreeing / counted if counted else (1.0 if found_candidate == found_reference else 0.0)
    return Agreement("pose", frames_seen, round(score, 4), found_reference, found_candidate,
                     frames_with_other_count=count_differs)


def detector_agreement(frames: Iterable[np.ndarray], reference: Any, candidate: Any) -> Agreement:
    """`reference` and `candidate`: edge.perception.Detector (any backend), same classes."""
    fall_id = reference.fall_class_id
    found_reference = found_candidate = matched = frames_seen = 0
    ious: List[float] = []
    changes: List[float] = []
    for image in frames:
        boxes_reference: List[Detection] = reference.detect(image)
        boxes_candidate: List[Detection] = candidate.detect(image)
        pairs = match(boxes_reference, boxes_candidate)
        found_reference += len(boxes_reference)
        found_candidate += len(boxes_candidate)
        matched += len(pairs)
        ious += [iou for _, _, iou in pairs]
        changes += [abs(fall_score(r, fall_id) - fall_score(c, fall_id)) for r, c, _ in pairs]
        frames_seen += 1
    score = matched / found_reference if found_reference else (1.0 if not found_candidate else 0.0)
    return Agreement("detector", frames_seen, round(score, 4), found_reference, found_candidate,
                     iou_median=round(statistics.median(ious), 4) if ious else None,
                     fall_score_change_median=round(statistics.median(changes), 4) if changes else None)


def compare_models(kind: str, settings: Union[DetectorConfig, PoseConfig], models: Sequence[Tuple[Path, str]],
                   frames: Iterable[np.ndarray]) -> Agreement:
    """Load the reference and the candidate (each a model file and its backend type) with one
    section's settings and compare them on `frames`: what the build and `int8-agreement` run."""
    from edge.perception import Detector, PoseEstimator

    load = Detector.from_config if kind == "yolo" else PoseEstimator.from_config
    reference, candidate = [load(replace(settings, type=backend, model=str(path)), path) for path, backend in models]
    if kind == "yolo":
        return detector_agreement(frames, reference, candidate)
    return pose_agreement(frames, reference, candidate, min_score=settings.min_keypoint_score)


def fall_score(detection: Detection, fall_id: int) -> float:
    """The box's score for the fall class: from its per-class scores, else its own score if it is a fall."""
    if detection.class_scores:
        return float(detection.class_scores[fall_id])
    return detection.score if detection.class_id == fall_id else 0.0

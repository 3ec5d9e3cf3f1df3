"""IoU tracker with a centre-distance fallback, so a person keeps one id while they fall.

A falling person's box changes from tall to wide within a few frames; plain IoU then
loses them and a new track would have no upright baseline. So an observation that does not
overlap enough may still join the nearest track whose centre is within `max_center_distance`
of its size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.config import FallConfig, TrackerConfig
from edge.decoding.yolo import boxes_array, iou_matrix
from edge.fall.state_machine import FallStateMachine
from edge.types import Box, Observation, Person

logger = logging.getLogger(__name__)

_MAX_CENTER_DISTANCE = 0.75  # in units of the track box's larger side
_UNMATCHED = 1.0 + _MAX_CENTER_DISTANCE + 0.1  # cost of leaving a track unmatched: above any feasible pair
_INFEASIBLE = 1e6


@dataclass
class Track:
    track_id: int
    box: Box
    first_seen_s: float
    last_seen_s: float
    fall: FallStateMachine
    hits: int = 1
    person: Optional[Person] = None  # the latest pose seen for this track
    person_time_s: Optional[float] = None
    detector_fall_score: Optional[float] = None
    detector_time_s: Optional[float] = None
    observed_this_frame: bool = False
    crop_misses: int = 0  # crop pose passes in a row that found nobody here
    last_crop_s: Optional[float] = None
    extras: Dict[str, float] = field(default_factory=dict)

    def observe(self, observation: Observation, time_s: float) -> None:
        self.box = observation.box
        self.last_seen_s = time_s
        self.hits += 1
        self.observed_this_frame = True
        if observation.person is not None:
            self.person, self.person_time_s = observation.person, time_s

    def set_detector_score(self, fall_score: float, time_s: float) -> None:
        self.detector_fall_score, self.detector_time_s = fall_score, time_s


def association_cost(track_boxes: List[Box], obs_boxes: List[Box], iou_threshold: float,
                     track_has_pose: List[bool], obs_has_pose: List[bool]) -> np.ndarray:
    """Cost [tracks x observations]: 1-IoU for overlaps, 1+distance for near misses, else infeasible.

    The near-miss rule only joins a pose to a pose: a detector box of a pillow or a coat must
    never take over a person's track by being close to it.
    """
    if not track_boxes or not obs_boxes:
        return np.zeros((len(track_boxes), len(obs_boxes)))
    a, b = boxes_array(track_boxes), boxes_array(obs_boxes)
    iou = iou_matrix(a, b)
    centres_a = (a[:, :2] + a[:, 2:]) / 2
    centres_b = (b[:, :2] + b[:, 2:]) / 2
    size = np.maximum(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])[:, None]
    distance = np.linalg.norm(centres_a[:, None, :] - centres_b[None, :, :], axis=2) / np.maximum(size, 1.0)
    cost = np.full(iou.shape, _INFEASIBLE)
    both_pose = np.array(track_has_pose, dtype=bool)[:, None] & np.array(obs_has_pose, dtype=bool)[None, :]
    near = (distance <= _MAX_CENTER_DISTANCE) & both_pose
    cost[near] = 1.0 + distance[near]
    overlapping = iou >= iou_threshold
    cost[overlapping] = 1.0 - iou[overlapping]
    return cost


class Tracker:
    def __init__(self, config: TrackerConfig, fall_config: FallConfig) -> None:
        self.config = config
        self.fall_config = fall_config
        self.tracks: List[Track] = []
        self._next_id = 1

    def update(self, observations: List[Observation], time_s: float) -> List[Track]:
        for track in self.tracks:
            track.observed_this_frame = False
        cost = association_cost([t.box for t in self.tracks], [o.box for o in observations],
                                self.config.iou_threshold, [t.person is not None for t in self.tracks],
                                [o.person is not None for o in observations])
        matched_obs = set()
        if cost.size:
            # Extra "no match" columns let a track stay unmatched rather than be forced onto a
            # far observation just because the assignment must fill every row.
            padded = np.hstack([cost, np.full((len(self.tracks), len(self.tracks)), _UNMATCHED)])
            rows, cols = linear_sum_assignment(padded)
            for row, col in zip(rows, cols):
                if col < len(observations) and cost[row, col] < _INFEASIBLE:
                    self.tracks[row].observe(observations[col], time_s)
                    matched_obs.add(col)
        for index, observation in enumerate(observations):
            if index not in matched_obs:
                self._start(observation, time_s)
        self.tracks = [t for t in self.tracks if time_s - t.last_seen_s <= self._max_age(t)]
        return self.tracks

    def _max_age(self, track: Track) -> float:
        # Someone lying on the floor may be hidden by furniture or missed by the models for a
        # while; keep their track (and its alarm timer) much longer than a walker's.
        return self.config.down_max_age_s if track.fall.is_down else self.config.max_age_s

    def _start(self, observation: Observation, time_s: float) -> Track:
        track = Track(track_id=self._next_id, box=observation.box, first_seen_s=time_s, last_seen_s=time_s,
                      fall=FallStateMachine(self.fall_config), observed_this_frame=True)
        if observation.person is not None:
            track.person, track.person_time_s = observation.person, time_s
        self._next_id += 1
        self.tracks.append(track)
        logger.debug("t=%.2f new track %d at %s", time_s, track.track_id, observation.box.as_list())
        return track

    def confirmed(self) -> List[Track]:
        return [t for t in self.tracks if t.hits >= self.config.min_hits]

"""IoU tracker with a centre-distance fallback and a handover, so a person keeps one id while they fall.

A falling person's box changes from tall to wide within a few frames; plain IoU then
loses them and a new track would have no upright baseline. So an observation that does not
overlap enough may still join the nearest track whose centre is within `max_center_distance`
of its size. When even that fails (the pose model lost the person mid-fall and found them
again on the floor), a skeleton that appears low, within reach of where a track stood or was
falling moments before, continues that track: its baseline and fall candidate carry on.
"""


import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, List, Optional, Set, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.config import FallConfig, PoseConfig, TrackerConfig
from edge.fall.features import posture_features, torso_angle_deg
from edge.fall.sequence import WINDOW_S
from edge.fall.state_machine import FallState, FallStateMachine, Transition
from edge.geometry import box_gap, boxes_array, iou_matrix
from edge.types import Box, Observation, Person
from edge.zones.areas import ZoneSet

logger = logging.getLogger(__name__)

_MAX_CENTER_DISTANCE = 0.75  # in units of the track box's larger side
_UNMATCHED = 1.0 + _MAX_CENTER_DISTANCE + 0.1  # cost of leaving a track unmatched: above any feasible pair
_INFEASIBLE = 1e6
_HANDOVER_STATES = (FallState.UPRIGHT, FallState.FALLING)
_LOW_BELOW_HEAD = 0.25  # a handed-over skeleton's top is at least this share of the height below the head
_BORDER_SHARE = 0.02  # a box this close to the frame's edge (share of its size) touches the border
# Two skeletons overlapping this much in one frame are one person found twice (the whole-frame
# pass and a crop pass); two people rarely stand so exactly in front of each other.
_DUPLICATE_IOU = 0.7
_HELPER_MIN_SIZE = 0.5  # a helper's box is at least this share of the lowered person's upright height
_SKELETON_HISTORY_S = WINDOW_S + 0.2  # the sequence cue's window, and a step to spare


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
    handovers: int = 0  # times a skeleton found on the floor continued this track
    first_pose_s: Optional[float] = None  # when this track first had a skeleton
    # (time, keypoints) of its recent skeletons: the learned sequence cue's input
    skeletons: Deque[Tuple[float, np.ndarray]] = field(default_factory=deque)
    sequence_score: Optional[float] = None  # the sequence cue on its last window ...
    sequence_time_s: Optional[float] = None  # ... ending here

    def observe(self, observation: Observation, time_s: float) -> None:
        self.box = observation.box
        self.last_seen_s = time_s
        self.hits += 1
        self.observed_this_frame = True
        if observation.person is not None:
            self.person, self.person_time_s = observation.person, time_s
            if self.first_pose_s is None:
                self.first_pose_s = time_s
            self.remember_skeleton(observation.person.keypoints, time_s)

    def keypoints_at(self, time_s: float) -> Optional[np.ndarray]:
        """The skeleton seen at time_s (this frame), or None when this frame gave it none."""
        return self.person.keypoints if self.person is not None and self.person_time_s == time_s else None

    def remember_skeleton(self, keypoints: np.ndarray, time_s: float) -> None:
        if self.skeletons and self.skeletons[-1][0] == time_s:
            self.skeletons.pop()  # a crop pass found it again on this frame: keep the latest
        self.skeletons.append((time_s, keypoints))
        while self.skeletons and self.skeletons[0][0] < time_s - _SKELETON_HISTORY_S:
            self.skeletons.popleft()

    def set_sequence_score(self, score: float, time_s: float) -> None:
        self.sequence_score, self.sequence_time_s = score, time_s

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
    def __init__(self, config: TrackerConfig, fall_config: FallConfig,
                 min_keypoint_score: float = PoseConfig().min_keypoint_score, zones: Optional[ZoneSet] = None) -> None:
        self.config = config
        self.fall_config = fall_config
        self.min_keypoint_score = min_keypoint_score
        self.zones = zones if zones is not None and zones.has_beds else None  # the camera's bed zones
        self.tracks: List[Track] = []
        self._next_id = 1

    def update(self, observations: List[Observation], time_s: float) -> List[Track]:
        for track in self.tracks:
            track.observed_this_frame = False
        cost = association_cost([t.box for t in self.tracks], [o.box for o in observations],
                                self.config.iou_threshold, [t.person is not None for t in self.tracks],
                                [o.person is not None for o in observations])
        matched_obs: Set[int] = set()
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
            if index in matched_obs:
                continue
            donor = self._fallen_from(observation, time_s) if observation.person is not None else None
            if donor is not None:
                self._hand_over(donor, observation, time_s)
            else:
                self._start(observation, time_s)
        self.tracks = [t for t in self.tracks if time_s - t.last_seen_s <= self._max_age(t)]
        return self.tracks

    def _fallen_from(self, observation: Observation, time_s: float) -> Optional[Track]:
        """The track this skeleton most likely is, if it lies low (or lying) within reach of where a
        track stood or was falling at most tracker.handover_s ago and that track has no skeleton this
        frame. Lying along a high camera's line of sight, a body on the floor can be as tall in the
        picture as standing: a torso at fall.torso_angle_high_deg or more counts as lying."""
        best: Optional[Track] = None
        best_distance = math.inf
        box = observation.box
        assert observation.person is not None
        angle = torso_angle_deg(observation.person.keypoints, self.min_keypoint_score)
        lying = angle is not None and angle >= self.fall_config.torso_angle_high_deg
        for track in self.tracks:
            machine = track.fall
            base = machine.baseline
            if (base is None or track.person_time_s == time_s or machine.state not in _HANDOVER_STATES
                    or machine.last_upright_s is None or time_s - machine.last_upright_s > self.config.handover_s):
                continue
            if box.y1 < base.top_y + _LOW_BELOW_HEAD * base.height and not lying:
                continue  # as tall as the person standing, and upright: somebody else
            feet_x, feet_y = track.box.center[0], base.feet_y
            centre_x, centre_y = box.center
            distance = math.hypot(centre_x - feet_x, centre_y - feet_y) / max(base.height, 1.0)
            if distance <= self.config.handover_reach and distance < best_distance:
                best, best_distance = track, distance
        return best

    @staticmethod
    def _hand_over(donor: Track, observation: Observation, time_s: float) -> None:
        logger.debug("t=%.2f track %d continues at %s (found low after a fall)", time_s, donor.track_id,
                     observation.box.as_list())
        donor.observe(observation, time_s)
        donor.handovers += 1

    def continue_fallen(self, time_s: float) -> None:
        """A track that got its first skeleton this frame from a crop pass (it began as a bare
        detector box) is handed over like a skeleton found by the whole-frame pass: where it lies
        low or lying near a track that stood moments ago, it is that person, and that track goes
        on with its baseline instead of a new one that could never raise an alarm."""
        for track in list(self.tracks):
            if track.first_pose_s != time_s or track.fall.baseline is not None or track.person is None:
                continue
            observation = Observation(box=track.box, person=track.person)
            donor = self._fallen_from(observation, time_s)
            if donor is None or donor is track:
                continue
            self._hand_over(donor, observation, time_s)
            if track.detector_time_s is not None and (donor.detector_time_s is None
                                                      or track.detector_time_s >= donor.detector_time_s):
                donor.set_detector_score(track.detector_fall_score, track.detector_time_s)
            self.tracks.remove(track)

    def drop_duplicates(self, time_s: float) -> None:
        """Tracks holding the same person's skeleton this frame are one person: keep the one that
        has followed them longest. A duplicate would otherwise be left to pick up whatever box is
        near (a mat on the floor) while the other follows the person."""
        posed = [t for t in self.tracks if t.person is not None and t.person_time_s == time_s]
        if len(posed) < 2:
            return
        boxes = boxes_array([t.person.box for t in posed if t.person is not None])
        overlaps = iou_matrix(boxes, boxes)
        order = sorted(range(len(posed)), key=lambda i: (-posed[i].hits, posed[i].track_id))
        dropped: Set[int] = set()
        for rank, keep in enumerate(order):
            if posed[keep].track_id in dropped:
                continue
            for other in order[rank + 1:]:
                if overlaps[keep, other] >= _DUPLICATE_IOU:
                    dropped.add(posed[other].track_id)
        if dropped:
            logger.debug("t=%.2f dropped duplicate tracks %s", time_s, sorted(dropped))
            self.tracks = [t for t in self.tracks if t.track_id not in dropped]

    def _max_age(self, track: Track) -> float:
        # Someone lying on the floor may be hidden by furniture or missed by the models for a
        # while; keep their track (and its alarm timer) much longer than a walker's. So is a
        # candidate that vanished right after dropping fast: it may be on the floor unseen.
        return self.config.down_max_age_s if track.fall.keep_when_lost else self.config.max_age_s

    def advance_falls(self, time_s: float, min_keypoint_score: float, detector_enabled: bool,
                      frame_size: Tuple[int, int]) -> List[Tuple[Track, Transition]]:
        """Feed every track's observation of this frame (or its absence) to its fall state machine."""
        fall = self.fall_config
        out: List[Tuple[Track, Transition]] = []
        for track in self.tracks:
            features = None
            if track.observed_this_frame:
                detector_score = None
                if track.detector_time_s is not None and time_s - track.detector_time_s <= fall.detector_max_age_s:
                    detector_score = track.detector_fall_score
                keypoints = track.keypoints_at(time_s)
                features = posture_features(keypoints, track.box, detector_score, min_keypoint_score)
            detector_seen: Optional[float] = None
            if detector_enabled:
                detector_seen = track.detector_time_s if track.detector_time_s is not None else float("-inf")
            sequence_score = track.sequence_score if track.sequence_time_s == time_s else None
            in_bed = None
            if features is not None and self.zones is not None:
                in_bed = self.zones.in_bed(keypoints, track.box, frame_size, min_keypoint_score)
            transitions = track.fall.update(time_s, features, track.box.height, detector_seen,
                                            at_border=touches_border(track.box, *frame_size),
                                            sequence_score=sequence_score,
                                            # only a candidate counts its helped frames
                                            helper_near=(features is not None and track.fall.state == FallState.FALLING
                                                         and self._helper_near(track, time_s)),
                                            in_bed=in_bed)
            out += [(track, transition) for transition in transitions]
        return out

    def _helper_near(self, track: Track, time_s: float) -> bool:
        """Another person's skeleton this frame, not lying or down themselves, within
        fall.helper_reach of this track's box (in the helper's own heights: an arm's reach) and at
        least half this person's upright size in the picture (someone far behind them only
        overlaps in the image)."""
        reach = self.fall_config.helper_reach
        if reach <= 0:
            return False
        machine = track.fall
        height = machine.baseline.height if machine.baseline is not None else track.box.height
        for other in self.tracks:
            if (other is track or other.person is None or other.person_time_s != time_s or other.fall.lying
                    or other.fall.state in (FallState.DOWN, FallState.ALARM)):
                continue
            helper_height = other.box.height
            if helper_height >= _HELPER_MIN_SIZE * height and box_gap(track.box, other.box) <= reach * helper_height:
                return True
        return False

    def _start(self, observation: Observation, time_s: float) -> Track:
        track = Track(track_id=self._next_id, box=observation.box, first_seen_s=time_s, last_seen_s=time_s,
                      fall=FallStateMachine(self.fall_config), observed_this_frame=True)
        if observation.person is not None:
            track.person, track.person_time_s, track.first_pose_s = observation.person, time_s, time_s
            track.remember_skeleton(observation.person.keypoints, time_s)
        self._next_id += 1
        self.tracks.append(track)
        logger.debug("t=%.2f new track %d at %s", time_s, track.track_id, observation.box.as_list())
        return track

    def confirmed(self) -> List[Track]:
        return [t for t in self.tracks if t.hits >= self.config.min_hits]


def touches_border(box: Box, frame_width: int, frame_height: int) -> bool:
    margin_x, margin_y = _BORDER_SHARE * frame_width, _BORDER_SHARE * frame_height
    return (box.x1 <= margin_x or box.y1 <= margin_y or box.x2 >= frame_width - margin_x
            or box.y2 >= frame_height - margin_y)

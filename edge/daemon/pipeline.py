"""One camera's processing: frame -> people/detections -> tracks -> fall states -> events.

Scheduling on a small CPU: the pose model (~15 ms) runs on every processed frame; the
detector (~10x dearer) runs every `detector.every_n_frames` frames and on the next frame
after a track turns into a fall candidate, so that it can confirm or veto the fall.
People too small for the whole-frame pose pass get a second pass on a crop around them.
"""


import logging
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Deque, Dict, List, Optional, Set, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.config import Config
from edge.decoding.letterbox import ensure_bgr, square_crop_box
from edge.fall.sequence import resample, window_features
from edge.fall.state_machine import FallState, Transition
from edge.geometry import boxes_array, iou_matrix, nms
from edge.perception import Detector, PoseEstimator
from edge.perception.sequence import SequenceScorer
from edge.tracking.tracker import Track, Tracker
from edge.types import Box, Detection, EventType, FallEvent, Frame, FrameResult, Observation, Person
from edge.zones.areas import ZoneSet, ground_point, to_shares
from edge.zones.danger import DangerWatcher, ZoneHit

logger = logging.getLogger(__name__)

_MATCH_IOU = 0.3  # a pose and a detection of the same person overlap at least this much
_SAME_PERSON_IOU = 0.6  # detector boxes of different classes over one person
_MAX_CROP_MISSES = 3
# Work shed, step by step, when the box cannot keep every camera at output.min_process_fps
# (runner.LoadGovernor): (crops per frame at most, detector period times, crops only for fall
# candidates). The detector's look at a fall candidate is never shed.
SHED_LEVELS: Tuple[Tuple[Optional[int], int, bool], ...] = ((None, 1, False), (1, 1, False), (1, 2, False),
                                                            (1, 4, True))
_TIMING_WINDOW = 10000


@dataclass
class PipelineStats:
    frames_processed: int
    tracks: int  # confirmed tracks (tracker.min_hits observations or more)
    recent_ms: Dict[str, List[float]]  # stage -> its latest times


def iso_utc(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rounded(keypoints: np.ndarray) -> List[List[float]]:
    """Keypoints as an event carries them: pixels to 0.1, scores to 0.001."""
    return [[round(float(v), 1 if i < 2 else 3) for i, v in enumerate(row)] for row in keypoints]


def person_boxes(detections: List[Detection], fall_class_id: int) -> List[Detection]:
    """One box per person: class-aware NMS keeps a Normal and a Fall box on the same body;
    merge them and carry the highest Fall score into the kept box's class_scores."""
    if not detections:
        return []
    boxes = boxes_array([d.box for d in detections])
    scores = np.array([d.score for d in detections])
    keep = nms(boxes, scores, _SAME_PERSON_IOU)
    overlaps = iou_matrix(boxes[keep], boxes)
    merged = []
    for row, index in enumerate(keep):
        members = np.nonzero(overlaps[row] > _SAME_PERSON_IOU)[0]
        fall = max(detections[m].class_scores[fall_class_id] for m in members)
        base = detections[index]
        scores_list = list(base.class_scores)
        scores_list[fall_class_id] = fall
        merged.append(Detection(base.box, base.score, base.class_id, base.label, tuple(scores_list)))
    return merged


def merge_observations(people: List[Person], detections: List[Detection]) -> List[Observation]:
    """Pair each pose with the detection of the same person; keep the unpaired ones alone."""
    observations: List[Observation] = []
    paired_people, paired_dets = set(), set()
    if people and detections:
        iou = iou_matrix(boxes_array([p.box for p in people]), boxes_array([d.box for d in detections]))
        rows, cols = linear_sum_assignment(-iou)
        for row, col in zip(rows, cols):
            if iou[row, col] >= _MATCH_IOU:
                observations.append(Observation(box=people[row].box, person=people[row]))
                paired_people.add(row)
                paired_dets.add(col)
    observations += [Observation(box=p.box, person=p) for i, p in enumerate(people) if i not in paired_people]
    observations += [Observation(box=d.box) for i, d in enumerate(detections) if i not in paired_dets]
    return observations


class FallPipeline:
    def __init__(self, config: Config, pose: PoseEstimator, detector: Optional[Detector], camera: Optional[str] = None,
                 sequence: Optional[SequenceScorer] = None):
        self.config = config
        self.pose = pose
        self.detector = detector if config.detector.enabled else None
        self.sequence = sequence if config.sequence.enabled else None
        self.camera = camera or config.output.camera
        self.zones = ZoneSet(config.zones_of(self.camera))
        self.tracker = Tracker(config.tracker, config.fall, config.pose.min_keypoint_score, zones=self.zones)
        self.danger = DangerWatcher(self.zones.zones)
        self._unwatched: Set[int] = set()  # tracks whose fall was outside every watch zone: their chain is not reported
        self._watched_in: Dict[int, str] = {}  # track -> the watch zone its fall was in
        self._zone_boxes: Dict[int, List[float]] = {}  # where each person was last seen, for a gone one's cleared event
        self.frames_processed = 0
        self._detector_due = True  # run on the first frame
        self.shed_level = 0  # SHED_LEVELS: set by the multi-camera loop's governor
        self.detector_phase = 0  # cameras sharing a box run their detector on different frames
        # Recent stage timings (bounded: the daemon runs for months).
        self.timings_ms: Dict[str, Deque[float]] = defaultdict(lambda: deque(maxlen=_TIMING_WINDOW))

    def stats(self, recent: int = 100) -> "PipelineStats":
        """A snapshot for health reports: frames so far, people tracked, each stage's recent times."""
        return PipelineStats(frames_processed=self.frames_processed, tracks=len(self.tracker.confirmed()),
                             recent_ms={stage: list(times)[-recent:] for stage, times in self.timings_ms.items()})

    # -- stages ----------------------------------------------------------------------------

    def _timed(self, stage: str, started: float) -> None:
        self.timings_ms[stage].append((time.perf_counter() - started) * 1000.0)

    def _run_detector(self, image: np.ndarray) -> List[Detection]:
        assert self.detector is not None
        started = time.perf_counter()
        detections = person_boxes(self.detector.detect(image), self.detector.fall_class_id)
        self._timed("detector", started)
        return detections

    def _refine_with_crops(self, image: np.ndarray, tracks: List[Track], time_s: float) -> List[Box]:
        """Second pose pass on crops around people who are small or got no pose this frame."""
        height, width = image.shape[:2]
        most, _, urgent_only = SHED_LEVELS[self.shed_level]
        limit = self.config.pose.max_crops_per_frame
        limit = limit if most is None else min(most, limit)
        wanted = []
        for track in tracks:
            # Tracks missed this frame are cropped too, around their last box: that is how a
            # small person the whole-frame pass cannot see is followed between detector runs.
            small = track.box.height < self.config.pose.crop_below_height_fraction * height
            no_pose = track.person is None or track.person_time_s != time_s
            # A detector box where crops keep finding nobody (a coat, a pillow) is retried only
            # when the detector refreshes it, not on every frame.
            fresh_detection = track.detector_time_s == time_s
            if track.crop_misses >= _MAX_CROP_MISSES and not fresh_detection:
                continue
            if small or no_pose:
                # Fall candidates first, then whoever waited longest for a crop (round robin when
                # there are more small people than crops per frame).
                urgent = track.fall.state in (FallState.FALLING, FallState.DOWN, FallState.ALARM)
                if urgent_only and not urgent:
                    continue
                waited = time_s - (track.last_crop_s if track.last_crop_s is not None else float("-inf"))
                wanted.append((urgent, waited, track))
        wanted.sort(key=lambda item: (item[0], item[1]), reverse=True)
        crops: List[Box] = []
        for _, _, track in wanted[:limit]:
            track.last_crop_s = time_s
            region = square_crop_box(track.box, self.config.pose.crop_margin, width, height)
            started = time.perf_counter()
            people = self.pose.estimate_in(image, region)
            self._timed("pose_crop", started)
            crops.append(region)
            best = self._best_match(track.box, people)
            if best is not None:
                track.crop_misses = 0
                track.observe(Observation(box=best.box, person=best), time_s)
            else:
                track.crop_misses += 1
        return crops

    @staticmethod
    def _best_match(box: Box, people: List[Person]) -> Optional[Person]:
        if not people:
            return None
        iou = iou_matrix(boxes_array([box]), boxes_array([p.box for p in people]))[0]
        best = int(iou.argmax())
        return people[best] if iou[best] >= _MATCH_IOU else None

    # -- one frame ---------------------------------------------------------------------------

    def process(self, frame: Frame) -> FrameResult:
        started_frame = time.perf_counter()
        image = ensure_bgr(frame.image)
        time_s = frame.time_s
        started = time.perf_counter()
        people = self.pose.estimate(image)
        self._timed("pose_full", started)

        period = max(1, self.config.detector.every_n_frames) * SHED_LEVELS[self.shed_level][1]
        run_detector = self.detector is not None and (
            self._detector_due or (self.frames_processed + self.detector_phase) % period == 0
        )
        detections = self._run_detector(image) if run_detector else []
        self._detector_due = False

        started = time.perf_counter()
        tracks = self.tracker.update(merge_observations(people, detections), time_s)
        if run_detector:
            self._score_tracks_with_detector(tracks, detections, time_s)
        self._timed("tracking", started)
        crops = self._refine_with_crops(image, tracks, time_s)
        self.tracker.continue_fallen(time_s)
        self.tracker.drop_duplicates(time_s)
        tracks = self.tracker.tracks
        if self.sequence is not None:
            started = time.perf_counter()
            self._score_sequences(tracks, time_s)
            self._timed("sequence", started)

        started = time.perf_counter()
        frame_size = (image.shape[1], image.shape[0])
        events = self._update_fall_states(time_s, frame_size)
        events += self._zone_events(time_s, frame_size)
        self._timed("fall_logic", started)
        self.frames_processed += 1
        self._timed("total", started_frame)
        return FrameResult(frame=frame, tracks=list(tracks), events=events, detector_ran=run_detector, crops=crops,
                           camera=self.camera, min_hits=self.config.tracker.min_hits, zones=self.zones.zones)

    def _score_sequences(self, tracks: List[Track], time_s: float) -> None:
        """Every track with a fresh skeleton gets the sequence cue's score of its last two seconds
        (one model call for all of them)."""
        assert self.sequence is not None
        min_score = self.config.pose.min_keypoint_score
        scored, windows = [], []
        for track in tracks:
            if track.person is None or track.person_time_s != time_s:
                continue
            window = window_features(resample(list(track.skeletons), time_s), min_score)
            if window is not None:
                scored.append(track)
                windows.append(window)
        if windows:
            for track, score in zip(scored, self.sequence.score(windows)):
                track.set_sequence_score(score, time_s)

    def _score_tracks_with_detector(self, tracks: List[Track], detections: List[Detection], time_s: float) -> None:
        """Every track the detector looked at gets its Fall score (0 when no box covers it)."""
        assert self.detector is not None
        if not tracks:
            return
        fall_scores = np.array([d.class_scores[self.detector.fall_class_id] for d in detections])
        overlaps = iou_matrix(boxes_array([t.box for t in tracks]), boxes_array([d.box for d in detections]))
        for track, row in zip(tracks, overlaps):
            covering = fall_scores[row >= _MATCH_IOU]
            track.set_detector_score(float(covering.max()) if covering.size else 0.0, time_s)

    def _update_fall_states(self, time_s: float, frame_size: Tuple[int, int]) -> List[FallEvent]:
        transitions = self.tracker.advance_falls(time_s, self.config.pose.min_keypoint_score,
                                                 self.detector is not None, frame_size)
        if self.detector is not None and self.config.detector.on_fall_candidate and any(
                track.fall.wants_detector(track.detector_time_s) for track in self.tracker.tracks):
            self._detector_due = True
        events = []
        for track, transition in transitions:
            watched = self._watched(track, transition, time_s, frame_size)
            if watched is not None:
                events.append(self._event(track, transition, zone=watched or None))
        if self._unwatched or self._watched_in:  # forget the tracks the tracker dropped (months of them)
            alive = {track.track_id for track in self.tracker.tracks}
            self._unwatched &= alive
            self._watched_in = {k: v for k, v in self._watched_in.items() if k in alive}
        return events

    def _watched(self, track: Track, transition: Transition, time_s: float,
                 frame_size: Tuple[int, int]) -> Optional[str]:
        """With watch zones, a fall counts only inside one: the zone's name for a fall there
        ("" without watch zones), None for a fall (and the rest of its chain) outside them all."""
        if not self.zones.of_kind("watch"):
            return ""
        if transition.type == EventType.FALL_DETECTED:
            zone = self.zones.watched(track.keypoints_at(time_s), track.box, frame_size,
                                      self.config.pose.min_keypoint_score)
            if zone is None:
                self._unwatched.add(track.track_id)
                logger.info("t=%.2f fall of track %d outside every watch zone: not reported", time_s, track.track_id)
            else:
                self._unwatched.discard(track.track_id)
                self._watched_in[track.track_id] = zone
            return zone
        unwatched = track.track_id in self._unwatched
        zone = self._watched_in.get(track.track_id, "")  # the chain's later events name its zone too
        if transition.type == EventType.RECOVERED:
            self._unwatched.discard(track.track_id)
            self._watched_in.pop(track.track_id, None)
        return None if unwatched else zone

    def _zone_events(self, time_s: float, frame_size: Tuple[int, int]) -> List[FallEvent]:
        """Danger zones against where each person seen this frame stands."""
        if not self.danger.zones:
            return []
        min_score = self.config.pose.min_keypoint_score
        feet = {}
        tracks = {}
        for track in self.tracker.confirmed():
            if not track.observed_this_frame:
                continue
            feet[track.track_id] = to_shares(ground_point(track.keypoints_at(time_s), track.box, min_score), frame_size)
            tracks[track.track_id] = track
            self._zone_boxes[track.track_id] = track.box.as_list()
        # Someone out of sight this frame keeps their zone state; a track the tracker dropped clears it.
        alive = {track.track_id for track in self.tracker.tracks}
        events = [self._zone_event(hit, tracks.get(hit.track_id), time_s)
                  for hit in self.danger.update(time_s, feet, alive)]
        self._zone_boxes = {track_id: box for track_id, box in self._zone_boxes.items() if track_id in alive}
        return events

    def _zone_event(self, hit: ZoneHit, track: Optional[Track], time_s: float) -> FallEvent:
        event = FallEvent(
            event_id=str(uuid.uuid4()), type=hit.type, camera=self.camera, track_id=hit.track_id,
            stream_time_s=time_s, wall_time=iso_utc(datetime.now(timezone.utc)),
            confidence=1.0,  # a zone is geometry: the feet are in it or not
            torso_angle_deg=None,
            bbox=track.box.as_list() if track is not None else self._zone_boxes.get(hit.track_id, [0.0] * 4),
            keypoints=None if track is None or track.person is None else _rounded(track.person.keypoints),
            zone=hit.zone,
            extra={} if hit.seconds_to_enter is None else {"seconds_to_enter": hit.seconds_to_enter})
        logger.info("t=%.2f %s zone %s track %d", time_s, event.type, hit.zone, hit.track_id)
        return event

    def _event(self, track: Track, transition: Transition, zone: Optional[str] = None) -> FallEvent:
        features = transition.features
        detector_label = None
        if features is not None and features.detector_fall_score is not None and self.detector is not None:
            names = self.config.detector.class_names
            detector_label = (self.config.detector.fall_class if features.detector_fall_score >= 0.5
                              else next((n for n in names if n != self.config.detector.fall_class), None))
        now = datetime.now(timezone.utc)
        started_at = None
        if transition.fall_started_s is not None:
            started = now - timedelta(seconds=max(0.0, transition.time_s - transition.fall_started_s))
            started_at = iso_utc(started)
        keypoints = None if track.person is None else _rounded(track.person.keypoints)
        event = FallEvent(
            event_id=str(uuid.uuid4()),
            type=transition.type,
            camera=self.camera,
            track_id=track.track_id,
            stream_time_s=transition.time_s,
            wall_time=iso_utc(now),
            confidence=transition.confidence,
            torso_angle_deg=None if features is None else features.torso_angle_deg,
            bbox=track.box.as_list(),
            fall_started_s=transition.fall_started_s,
            started_at=started_at,
            detector_label=detector_label,
            keypoints=keypoints,
            extra={"hip_descent": track.fall.max_descent, "descent_speed": track.fall.peak_descent_speed},
            zone=zone,
        )
        logger.info("t=%.2f %s track %d conf %.2f", event.stream_time_s, event.type, event.track_id,
                    event.confidence)
        return event

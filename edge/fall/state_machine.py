"""Per-track fall state machine with hysteresis.

    unknown --upright for min_upright_s--> upright
    unknown --upright for quick_upright_s, then hips dropping fast--> falling   (short lead-in)
    upright --lying score >= lying_enter, or hips dropping fast--> falling
    falling --lying for confirm_s, hips dropped >= min_descent, detector looked--> down   (fall_detected)
    falling --lost right after a fast descent, away from the frame border, for lost_confirm_s--> down
    falling --upright for min_upright_s--> upright;  --no drop within fall_window_s--> lying (not a fall)
    falling --lying, but lowered slowly with another person beside them--> lying (helped down)
    falling --lying with the torso in a bed zone--> no fall (waits, then lying)
    any but down --lying outside a bed zone for confirm_s, fall_window_s after being in it--> down   (fall_detected)
    down    --still down alarm_hold_s after the fall--> alarm                              (alarm)
    down/alarm --upright for recover_s--> upright                                        (recovered)
    lying   --upright for min_upright_s--> upright

Every cue is measured against the same person standing (the baseline: hip height, torso
length, body height and head height over their last upright second), so a fall towards the
camera, which keeps the torso vertical in the image, still shows as the body collapsing and
the hips dropping. A person first seen lying has no baseline: they stay in `lying` (no alarm),
unless require_upright_baseline is false, when lying for alarm_hold_s raises fall_detected and
alarm. A track that takes over another's history (tracker: a person found on the floor where
someone was falling) keeps that baseline and candidate. With bed zones (README "Zones"), lying
in a bed is never a fall, and a person who was in a bed and lies outside it moments later has
fallen out of it, baseline or not (someone asleep when the stream starts has none).
"""


import logging
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Deque, Dict, List, Optional, Tuple

from edge.config import FallConfig
from edge.fall.features import PostureFeatures, lying_score, torso_upright
from edge.types import EventType

logger = logging.getLogger(__name__)

# Upright torso length is unknown until seen; until then assume the torso is this share of the box.
_TORSO_SHARE_OF_HEIGHT = 0.3
_BASELINE_WINDOW_S = 1.0  # the baseline is the median over this much recent upright time
_HISTORY_S = 6.0
_SPEED_WINDOW_S = 1.0  # descent speed: the fastest hip drop over this window
_POSE_GRACE_S = 1.0  # a skeleton this long before the last upright moment still counts
_TIME_EPSILON_S = 1e-3  # frame times are index / fps: 0.7333 - 0.6333 must count as 0.1 s


class FallState(str, Enum):
    UNKNOWN = "unknown"
    UPRIGHT = "upright"
    FALLING = "falling"
    DOWN = "down"
    ALARM = "alarm"
    LYING = "lying"  # lying or bent over, but not after a fall we saw


@dataclass
class Transition:
    """An event the machine raised on this update."""

    type: EventType  # fall_detected | alarm | recovered
    time_s: float
    fall_started_s: Optional[float]
    confidence: float
    features: Optional[PostureFeatures]


@dataclass
class Baseline:
    """The person standing: medians over their last upright second, frame pixels."""

    hip_y: float
    torso_length: float  # the yardstick: drops are measured in upright torso lengths
    height: float  # body extent height
    top_y: float  # top of the body extent (the head)
    seated: bool = False  # the person was sitting, not standing: a fall from a seat barely drops the hips

    @property
    def feet_y(self) -> float:
        """Where the person stands: the bottom of the upright body."""
        return self.top_y + self.height


@dataclass
class FallCues:
    """The latest observation against the baseline; the ratios are None before a baseline exists."""

    lying_score: float
    height_ratio: Optional[float] = None  # body height / upright body height
    torso_ratio: Optional[float] = None  # torso length / upright torso length (small: foreshortened)
    descent: Optional[float] = None  # hip drop, upright torso lengths
    head_drop: Optional[float] = None  # drop of the top of the body, upright torso lengths
    feet_drop: Optional[float] = None  # drop of the bottom of the body, upright torso lengths


@dataclass
class _Sample:
    time_s: float
    hip_y: float
    torso_length: Optional[float]
    height: float
    top_y: float
    upright: bool
    skeleton: bool  # hips from keypoints; without a skeleton hip_y is only the box centre
    seated: bool = False


def _median(values: List[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


class FallStateMachine:
    def __init__(self, config: FallConfig) -> None:
        self.config = config
        self.state = FallState.UNKNOWN
        self.lying = False  # the hysteresis flag
        self._upright_run_start: Optional[float] = None
        self._lying_run_start: Optional[float] = None
        self._last_upright_s: Optional[float] = None
        self._last_pose_s: Optional[float] = None  # last time a skeleton (torso) was seen
        self._last_pose_lying_score = 0.0  # lying score of the last observation with a skeleton
        self._history: Deque[_Sample] = deque()
        self._fall_started_s: Optional[float] = None
        self._fall_confirmed_s: Optional[float] = None
        self._candidate_opened_s: Optional[float] = None  # when the current fall candidate opened
        self.baseline: Optional[Baseline] = None
        self.cues: Optional[FallCues] = None
        self.last_features: Optional[PostureFeatures] = None
        self.max_descent = 0.0  # hip drop in torso lengths during the current candidate
        self.descent_speed = 0.0  # fastest hip drop, torso lengths per second, last second
        self.peak_descent_speed = 0.0  # fastest hip drop during the current candidate
        self.last_confidence = 0.0
        self._sequence_scores: Deque[Tuple[float, float]] = deque()  # (time, the learned cue's score)
        self._in_bed: Optional[bool] = None  # the torso in a bed zone on the last observation (None: no beds)
        self._last_in_bed_s: Optional[float] = None
        self._lying_out_of_bed_s: Optional[float] = None  # lying outside the beds since, right after one
        self._candidate_frames = 0  # observed frames of the current candidate ...
        self._helped_frames = 0  # ... and those with another person's skeleton within helper_reach
        self.sequence_score: Optional[float] = None  # the latest, for --trace
        self.why = ""  # why the state did or did not change on the last update (for --trace)

    # -- cues ------------------------------------------------------------------------------

    def _baseline_trusted(self) -> bool:
        """The baseline is provisional until the track has been upright for min_upright_s: a person
        first seen mid-fall, or a track that picked up someone else, would otherwise measure every
        pose against the wrong standing height and never look upright at all."""
        return self.baseline is not None and self.state not in (FallState.UNKNOWN, FallState.LYING)

    def _measure(self, features: PostureFeatures) -> FallCues:
        base = self.baseline
        plain_score = lying_score(features.torso_angle_deg, features.aspect_ratio, features.detector_fall_score,
                                  self.config)
        if base is None:
            return FallCues(lying_score=plain_score if plain_score is not None else 0.0)
        height_ratio = features.extent.height / max(base.height, 1.0)
        torso_ratio = features.torso_length / base.torso_length if features.torso_length else None
        descent = (features.hip_y - base.hip_y) / base.torso_length
        # Against someone seated, the body's height and the hips' drop say little (falling forward out
        # of a chair can leave the hips higher in the picture): the posture alone scores.
        score = (lying_score(features.torso_angle_deg, features.aspect_ratio, features.detector_fall_score,
                             self.config, height_ratio=height_ratio, torso_ratio=torso_ratio, descent=descent)
                 if self._baseline_trusted() and not base.seated else plain_score)
        return FallCues(lying_score=score if score is not None else 0.0, height_ratio=height_ratio,
                        torso_ratio=torso_ratio, descent=descent,
                        head_drop=(features.extent.y1 - base.top_y) / base.torso_length,
                        feet_drop=(features.extent.y2 - base.feet_y) / base.torso_length)

    @property
    def _seated_baseline(self) -> bool:
        return self.baseline is not None and self.baseline.seated

    def _hips_off(self, descent: float) -> bool:
        """The hips have left where this person was: at least min_descent below where they stood,
        or, from a seat, off it either way (falling forward out of a chair can raise them in the
        picture)."""
        return (abs(descent) if self._seated_baseline else descent) >= self.config.min_descent

    def _seated(self, features: PostureFeatures) -> bool:
        """Sitting by the skeleton's own proportions: torso near vertical over thighs that do not
        hang down (fall.seated_torso_max_deg, fall.seated_thigh_drop_max)."""
        cfg = self.config
        return (features.torso_angle_deg is not None and features.torso_angle_deg < cfg.seated_torso_max_deg
                and features.thigh_drop is not None and features.thigh_drop < cfg.seated_thigh_drop_max)

    def _looks_upright(self, features: PostureFeatures, cues: FallCues) -> bool:
        """Standing: a skeleton says so (a bare detector box never does), the posture scores low,
        and, against a trusted baseline, the body is neither collapsed nor with its hips far below
        where this person stands."""
        cfg = self.config
        if not features.has_skeleton or cues.lying_score > cfg.upright_below:
            return False
        if not self._baseline_trusted():
            return True
        collapsed = cues.height_ratio is not None and cues.height_ratio < cfg.collapse_start_ratio
        hips_down = cues.descent is not None and cues.descent >= cfg.min_descent
        return not (collapsed or hips_down)

    def _update_flags(self, time_s: float, features: PostureFeatures, box_height: float) -> None:
        cues = self._measure(features)
        self.cues = cues
        score = cues.lying_score
        if self.lying and score <= self.config.lying_exit:
            self.lying = False
        elif not self.lying and score >= self.config.lying_enter:
            self.lying = True
        if self.lying:
            self._lying_run_start = self._lying_run_start if self._lying_run_start is not None else time_s
        else:
            self._lying_run_start = None
        upright = self._looks_upright(features, cues)
        if upright:
            self._upright_run_start = self._upright_run_start if self._upright_run_start is not None else time_s
            self._last_upright_s = time_s
        else:
            self._upright_run_start = None
        self._history.append(_Sample(time_s, features.hip_y, features.torso_length, features.extent.height,
                                     features.extent.y1, upright, features.has_torso, self._seated(features)))
        while self._history and self._history[0].time_s < time_s - _HISTORY_S:
            self._history.popleft()
        self._refresh_baseline(box_height)
        self._refresh_descent_speed(time_s)

    def _refresh_baseline(self, box_height: float) -> None:
        """Hip height, torso length and body height while last upright: how far they fell is
        measured against these. Frozen while a fall is under way."""
        upright = [s for s in self._history if s.upright]
        if not upright:
            return
        if self.state not in (FallState.UNKNOWN, FallState.UPRIGHT, FallState.LYING) and self.baseline is not None:
            return
        recent = [s for s in upright if s.time_s >= upright[-1].time_s - _BASELINE_WINDOW_S]
        lengths = [s.torso_length for s in upright if s.torso_length]
        self.baseline = Baseline(hip_y=_median([s.hip_y for s in recent]),
                                 torso_length=_median(lengths) if lengths else box_height * _TORSO_SHARE_OF_HEIGHT,
                                 height=_median([s.height for s in recent]),
                                 top_y=_median([s.top_y for s in recent]),
                                 seated=2 * sum(s.seated for s in recent) > len(recent))

    def _refresh_descent_speed(self, time_s: float) -> None:
        scale = self.baseline.torso_length if self.baseline is not None else 1.0
        # Only skeletons: a box's centre jumps when the detector box grows or merges two people.
        window = [s for s in self._history if s.time_s >= time_s - _SPEED_WINDOW_S and s.skeleton]
        speed = 0.0
        for older, newer in zip(window, window[1:]):
            dt = newer.time_s - older.time_s
            if dt > 0:
                speed = max(speed, (newer.hip_y - older.hip_y) / dt / scale)
        self.descent_speed = speed

    def _upright_for(self, time_s: float, seconds: float) -> bool:
        return self._upright_run_start is not None and time_s - self._upright_run_start >= seconds

    def _upright_run_s(self, time_s: float) -> float:
        return 0.0 if self._upright_run_start is None else time_s - self._upright_run_start

    def _lying_for(self, time_s: float, seconds: float) -> bool:
        return self._lying_run_start is not None and time_s - self._lying_run_start >= seconds

    def _skeleton_seen_during_fall(self) -> bool:
        """The track showed a person's skeleton since it was last upright: a detector box of a
        coat or a pillow alone never makes a fall, but MoveNet losing someone on the floor
        (it often does) must not hide their fall either."""
        since = self._fall_started_s if self._fall_started_s is not None else self._lying_run_start
        return self._last_pose_s is not None and since is not None and self._last_pose_s >= since - _POSE_GRACE_S

    def _detector_looked(self, detector_seen_since: Optional[float]) -> bool:
        """The detector scored this track since it started lying (None: detector disabled)."""
        if detector_seen_since is None:
            return True
        return self._lying_run_start is not None and detector_seen_since >= self._lying_run_start

    def wants_detector(self, detector_seen_since: Optional[float]) -> bool:
        """A fall candidate the detector has not scored since it opened (or, once lying, since the
        lying began): its Fall score feeds the lying score, and confirming waits for that look.
        Before it lies, a candidate asks only while its hips are still down and its body is no
        taller in the picture than standing: a body growing as it goes down the picture is someone
        walking towards the camera (falling never makes a body taller), so crowds of walkers cost
        few extra detector runs."""
        if self.state != FallState.FALLING or self._candidate_opened_s is None:
            return False
        seen = float("-inf") if detector_seen_since is None else detector_seen_since
        if self.lying:
            return not self._detector_looked(seen)
        cues = self.cues
        if cues is None or cues.height_ratio is None or cues.descent is None:
            return False
        hips_down = cues.descent >= self.config.min_descent  # a walker's brief dip is over by now
        return hips_down and cues.height_ratio < 1.0 and seen < self._candidate_opened_s

    def _down_now(self) -> bool:
        """The last observation shows someone on the floor rather than getting up or sitting: hips
        still at least min_descent below standing (a deep bend comes back up), and the torso not
        upright at full length (someone who sat down fast on a low chair)."""
        cues, features = self.cues, self.last_features
        if cues is None or features is None or cues.descent is None:
            return False
        return self._hips_off(cues.descent) and not torso_upright(features.torso_angle_deg, cues.torso_ratio,
                                                                  self.config)

    def _dropping_fast(self) -> bool:
        cues, features = self.cues, self.last_features
        return (cues is not None and features is not None and features.has_torso and cues.descent is not None
                and cues.descent >= self.config.min_descent and self.descent_speed >= self.config.fast_descent_speed)

    def _quick_lead_in(self, time_s: float) -> bool:
        """A track not yet upright for min_upright_s whose body looked upright on at least two
        frames spanning quick_upright_s, moments ago, and whose hips now drop fast below that. Someone
        lying in bed when the stream starts never looked upright, so never qualifies."""
        cfg = self.config
        if cfg.quick_upright_s <= 0 or self._last_upright_s is None:
            return False
        # An upright sample already needed a body outline (has_skeleton); the torso itself may be
        # missing on those first frames (a person entering, half in the dark).
        upright = [s.time_s for s in self._history if s.upright]
        return (len(upright) >= 2 and upright[-1] - upright[0] >= cfg.quick_upright_s - _TIME_EPSILON_S
                and time_s - self._last_upright_s <= cfg.fall_window_s and self._dropping_fast())

    def _lost_after_fast_descent(self, time_s: float, at_border: bool) -> bool:
        """No skeleton right after dropping fast, somewhere they cannot have walked out of the
        picture: small, dark or hidden people vanish like this once they are on the floor. The
        detector may still box them there now and then (a bare box says nothing about standing
        up, see _looks_upright); that does not restart the wait."""
        cfg = self.config
        return (not at_border and self._last_pose_s is not None
                and time_s - self._last_pose_s >= cfg.lost_confirm_s - _TIME_EPSILON_S
                and self.max_descent >= cfg.lost_min_descent
                and self.peak_descent_speed >= cfg.fast_descent_speed
                and self._skeleton_seen_during_fall()
                # the last skeleton was going down, not someone upright (in a crowd, a track can
                # jump to another person walking lower in the picture and then lose them)
                and self._last_pose_lying_score >= cfg.lying_exit)

    def _sequence_max(self) -> Optional[float]:
        """The sequence cue's highest score over the last sequence_window_s (update() keeps only
        those), None without scores (the cue is off, or the track had no window of skeletons)."""
        return max((score for _, score in self._sequence_scores), default=None)

    def _sequence_allows(self) -> bool:
        """The learned cue does not contradict a fall: it has no say without scores, and it vetoes
        only motions it scores as controlled (exercise goes down and up under control)."""
        if self._seated_baseline:
            return True  # the cue learnt falls from standing only: it has no say on a fall from a seat
        best = self._sequence_max()
        return best is None or best >= self.config.sequence_confirm_min

    def _track_bed(self, time_s: float, in_bed: Optional[bool]) -> None:
        """Remember when the torso was last in a bed zone, and since when it lies outside them
        right after (within fall_window_s): a fall out of bed."""
        self._in_bed = in_bed
        if in_bed is None:
            return
        if in_bed:
            self._last_in_bed_s, self._lying_out_of_bed_s = time_s, None
        elif not self.lying:
            self._lying_out_of_bed_s = None  # sat up or got up beside the bed: ordinary
        elif (self._lying_out_of_bed_s is None and self._last_in_bed_s is not None
              and time_s - self._last_in_bed_s <= self.config.fall_window_s):
            self._lying_out_of_bed_s = time_s

    def _fell_out_of_bed(self, time_s: float) -> bool:
        """Lying outside every bed zone for confirm_s, having been in one moments before, with a
        skeleton seen (a bare box on the floor says nothing about who it is)."""
        return (self._lying_out_of_bed_s is not None and self._in_bed is False
                and time_s - self._lying_out_of_bed_s >= self.config.confirm_s - _TIME_EPSILON_S
                and self._last_pose_s is not None and self._last_pose_s >= self._lying_out_of_bed_s)

    def _helped_down(self) -> bool:
        """Lowered by someone else: the hips never dropped fast and another person was beside
        them on at least helper_share of the candidate's frames (a carer's transfer to the floor).
        A fall beside a bystander drops fast, and a slow collapse alone has nobody beside it."""
        cfg = self.config
        return (cfg.helper_reach > 0 and self._candidate_frames > 0
                and self.peak_descent_speed < cfg.fast_descent_speed
                and self._helped_frames >= cfg.helper_share * self._candidate_frames)

    def _confidence(self) -> float:
        score = self.cues.lying_score if self.cues is not None else 0.0
        descent_part = min(1.0, self.max_descent / max(2 * self.config.min_descent, 1e-6))
        return round(0.7 * score + 0.3 * descent_part, 3)

    # -- the machine -----------------------------------------------------------------------

    def update(self, time_s: float, features: Optional[PostureFeatures], box_height: float,
               detector_seen_since: Optional[float] = None, at_border: bool = False,
               sequence_score: Optional[float] = None, helper_near: bool = False,
               in_bed: Optional[bool] = None) -> List[Transition]:
        """Advance to time_s. features is None when the track was not observed this frame.

        detector_seen_since: when the detector last scored this track (None if disabled);
        a fall is only confirmed once the detector has looked at the candidate.
        at_border: the track's last box touches the frame's edge (a person lost there may
        simply have walked out of view).
        sequence_score: the learned sequence cue on the window ending now (None: not scored).
        helper_near: another person's skeleton is within fall.helper_reach of this one this frame.
        in_bed: the torso is in a bed zone (None: the camera has no bed zones, or no observation).
        """
        if sequence_score is not None:
            self.sequence_score = sequence_score
            self._sequence_scores.append((time_s, sequence_score))
        while self._sequence_scores and self._sequence_scores[0][0] < time_s - self.config.sequence_window_s:
            self._sequence_scores.popleft()
        if features is not None:
            self._update_flags(time_s, features, box_height)
            self.last_features = features
            if features.has_torso:
                self._last_pose_s = time_s
                self._last_pose_lying_score = self.cues.lying_score if self.cues is not None else 0.0
            self._track_bed(time_s, in_bed)
        events: List[Transition] = []
        cfg = self.config
        state = self.state
        self.why = state.value
        if state not in (FallState.DOWN, FallState.ALARM) and self._fell_out_of_bed(time_s):
            self._open_candidate(self._last_in_bed_s)
            events.append(self._confirm(time_s))
            self.why = (f"falling: confirmed (lying outside the bed zone {time_s - self._lying_out_of_bed_s:.2f} s, "
                        f"{time_s - self._last_in_bed_s:.2f} s after it was in it)")
            return events
        if state in (FallState.UNKNOWN, FallState.LYING):
            upright_s = self._upright_run_s(time_s)
            self.why = ("lying, no upright baseline" if self.lying
                        else f"no upright baseline yet ({upright_s:.2f} of {cfg.min_upright_s:.2f} s)")
            if self._upright_for(time_s, cfg.min_upright_s):
                self._enter(FallState.UPRIGHT, time_s)
            elif state == FallState.UNKNOWN and features is not None and self._quick_lead_in(time_s):
                # Seen upright only briefly (the stream started, or they walked in) and already
                # going down fast: a candidate, measured against that brief baseline.
                self._open_candidate(self._last_upright_s)
                self._enter(FallState.FALLING, time_s)
                self.why = "candidate: hips dropping fast right after the person was first seen upright"
                self._track_descent(features)
            elif state == FallState.UNKNOWN and self.lying and self._lying_for(time_s, cfg.confirm_s):
                self._enter(FallState.LYING, time_s)
            elif (state == FallState.LYING and not cfg.require_upright_baseline and not self._in_bed
                  and self._lying_for(time_s, cfg.alarm_hold_s) and self.last_features is not None):
                # Found lying with no fall seen: only when the site asked for it.
                self._fall_started_s, self._fall_confirmed_s = None, time_s
                self._enter(FallState.ALARM, time_s)
                conf = round(self.cues.lying_score if self.cues is not None else 0.0, 3)
                events.append(Transition(EventType.FALL_DETECTED, time_s, None, conf, self.last_features))
                events.append(Transition(EventType.ALARM, time_s, None, conf, self.last_features))
        elif state == FallState.UPRIGHT:
            self.why = "upright: lying score under lying_enter, hips not dropping fast"
            if self.lying or (features is not None and self._dropping_fast()):
                self._open_candidate(self._last_upright_s)
                self._enter(FallState.FALLING, time_s)
                self.why = "candidate: " + ("lying score reached lying_enter" if self.lying else "hips dropping fast")
                self._track_descent(features)
        elif state == FallState.FALLING:
            self._track_descent(features)
            if features is not None:
                self._candidate_frames += 1
                self._helped_frames += int(helper_near)
            self.why = self._falling_why(time_s, detector_seen_since, features is None or not features.has_torso,
                                         at_border)
            since_upright = time_s - (self._last_upright_s if self._last_upright_s is not None else time_s)
            if self._upright_for(time_s, cfg.min_upright_s):
                # Back on their feet. A single upright-looking frame (pose noise on someone
                # lying towards the camera) does not cancel the candidate.
                self._enter(FallState.UPRIGHT, time_s)
            elif (self._lying_for(time_s, cfg.confirm_s) and self._down_now()
                  and (features is not None or not at_border)  # unseen at the edge: may have left
                  and self._skeleton_seen_during_fall() and self._detector_looked(detector_seen_since)
                  and self._sequence_allows() and not self._in_bed):
                if self._helped_down():
                    self._enter(FallState.LYING, time_s)
                    self.why = (f"lying, helped down: hips at most {self.peak_descent_speed:.2f} < "
                                f"{cfg.fast_descent_speed:.2f} torso lengths/s, another person beside them on "
                                f"{self._helped_frames} of {self._candidate_frames} frames")
                else:
                    events.append(self._confirm(time_s))
            elif ((features is None or not features.has_torso) and not self._in_bed
                  and self._lost_after_fast_descent(time_s, at_border)):
                events.append(self._confirm(time_s, lost=True))
            elif since_upright > cfg.fall_window_s + cfg.confirm_s:
                # The hips never dropped, or the lying never held: bent over, lay down slowly.
                self._enter(FallState.LYING if self.lying else FallState.UNKNOWN, time_s)
        elif state in (FallState.DOWN, FallState.ALARM):
            self.why = f"{state.value}: waiting for {cfg.recover_s:.1f} s upright"
            if self._upright_for(time_s, cfg.recover_s):
                events.append(Transition(EventType.RECOVERED, time_s, self._fall_started_s, self.last_confidence,
                                         self.last_features))
                self._enter(FallState.UPRIGHT, time_s)
            elif (state == FallState.DOWN and self._fall_confirmed_s is not None
                  and time_s - self._fall_confirmed_s >= cfg.alarm_hold_s
                  and self._upright_run_start is None):  # already back on their feet: wait for recovery
                self._enter(FallState.ALARM, time_s)
                events.append(Transition(EventType.ALARM, time_s, self._fall_started_s, self.last_confidence,
                                         self.last_features))
        return events

    def _open_candidate(self, started_s: Optional[float]) -> None:
        """A new candidate that began at started_s: its descent and helper counts start again."""
        self._fall_started_s = started_s
        self.max_descent, self.peak_descent_speed = 0.0, 0.0
        self._candidate_frames, self._helped_frames = 0, 0

    def _track_descent(self, features: Optional[PostureFeatures]) -> None:
        if features is not None and self.cues is not None and self.cues.descent is not None:
            self.max_descent = max(self.max_descent, self.cues.descent)
            self.peak_descent_speed = max(self.peak_descent_speed, self.descent_speed)

    def _confirm(self, time_s: float, lost: bool = False) -> Transition:
        self.why = "falling: confirmed" + (" (lost after a fast descent)" if lost else "")
        self._fall_confirmed_s = time_s
        self._enter(FallState.DOWN, time_s)
        self.last_confidence = self._confidence()
        return Transition(EventType.FALL_DETECTED, time_s, self._fall_started_s, self.last_confidence,
                          self.last_features)

    def _falling_why(self, time_s: float, detector_seen_since: Optional[float], unseen: bool,
                     at_border: bool) -> str:
        cfg = self.config
        if unseen and self._last_pose_s is not None:
            lost_s = time_s - self._last_pose_s
            if at_border:
                return f"falling: no skeleton for {lost_s:.2f} s at the frame border (may have walked out)"
            return (f"falling: no skeleton for {lost_s:.2f} s (confirm after {cfg.lost_confirm_s:.2f} s if descent "
                    f"{self.max_descent:.2f} >= {cfg.lost_min_descent:.2f} and speed "
                    f"{self.peak_descent_speed:.2f} >= {cfg.fast_descent_speed:.2f} and last skeleton's "
                    f"lying score {self._last_pose_lying_score:.2f} >= {cfg.lying_exit:.2f})")
        missing = []
        lying_s = 0.0 if self._lying_run_start is None else time_s - self._lying_run_start
        if lying_s < cfg.confirm_s:
            missing.append(f"lying {lying_s:.2f} of {cfg.confirm_s:.2f} s")
        descent = self.cues.descent if self.cues is not None else None
        if descent is None:
            missing.append("hips not down")
        elif not self._hips_off(descent):
            missing.append(f"hips still on the seat (moved {descent:.2f}, under {cfg.min_descent:.2f})"
                           if self._seated_baseline else f"descent {descent:.2f} < {cfg.min_descent:.2f}")
        elif (self.cues is not None and self.last_features is not None
              and torso_upright(self.last_features.torso_angle_deg, self.cues.torso_ratio, cfg)):
            missing.append("torso upright (sitting or kneeling)")
        if not self._skeleton_seen_during_fall():
            missing.append("no skeleton since the fall began")
        if not self._detector_looked(detector_seen_since):
            missing.append("detector has not looked")
        if not self._sequence_allows():
            missing.append(f"sequence cue {self._sequence_max():.2f} < {cfg.sequence_confirm_min:.2f} "
                           f"(a controlled movement)")
        if self._in_bed:
            missing.append("lying in a bed zone")
        return "falling: " + ("; ".join(missing) if missing else "confirmed")

    def _enter(self, state: FallState, time_s: float) -> None:
        if state != self.state:
            logger.debug("t=%.2f %s -> %s", time_s, self.state.value, state.value)
            if state == FallState.FALLING:
                self._candidate_opened_s = time_s
        self.state = state

    @property
    def is_down(self) -> bool:
        return self.state in (FallState.DOWN, FallState.ALARM) or (self.state == FallState.FALLING and self.lying)

    @property
    def last_upright_s(self) -> Optional[float]:
        return self._last_upright_s

    @property
    def keep_when_lost(self) -> bool:
        """A track worth keeping while unseen: down, or a candidate that was dropping fast (it may
        be on the floor out of the models' sight)."""
        return self.is_down or (self.state == FallState.FALLING
                                and self.peak_descent_speed >= self.config.fast_descent_speed)

    def trace(self) -> Dict[str, object]:
        """The cues and the decision of the last update, for --trace."""
        f, c = self.last_features, self.cues
        return {"torso_angle_deg": None if f is None else f.torso_angle_deg,
                "aspect": None if f is None else f.aspect_ratio,
                "detector_fall": None if f is None else f.detector_fall_score,
                "lying_score": None if c is None else c.lying_score,
                "height_ratio": None if c is None else c.height_ratio,
                "torso_ratio": None if c is None else c.torso_ratio,
                "descent": None if c is None else c.descent,
                "head_drop": None if c is None else c.head_drop,
                "feet_drop": None if c is None else c.feet_drop,
                "descent_speed": self.descent_speed, "max_descent": self.max_descent,
                "sequence": self.sequence_score,
                "seated_baseline": None if self.baseline is None else self.baseline.seated,
                "in_bed": self._in_bed,
                "state": self.state.value, "why": self.why}

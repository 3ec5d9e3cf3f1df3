"""Per-track fall state machine with hysteresis.

    unknown --upright for min_upright_s--> upright
    upright --lying score >= lying_enter--> falling
    falling --lying for confirm_s, hips dropped >= min_descent, detector looked--> down   (fall_detected)
    falling --upright for min_upright_s--> upright;  --no drop within fall_window_s--> lying (not a fall)
    down    --still down alarm_hold_s after the fall--> alarm                              (alarm)
    down/alarm --upright for recover_s--> upright                                        (recovered)
    lying   --upright for min_upright_s--> upright

A person first seen lying has no upright baseline: they stay in `lying` (no alarm), unless
require_upright_baseline is false, when lying for alarm_hold_s raises fall_detected and alarm.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Deque, List, Optional, Tuple

from edge.config import FallConfig
from edge.fall.features import PostureFeatures

logger = logging.getLogger(__name__)

# Upright torso length is unknown until seen; until then assume the torso is this share of the box.
_TORSO_SHARE_OF_HEIGHT = 0.3
_BASELINE_WINDOW_S = 1.0  # upright hip height = median over this much recent upright time
_HISTORY_S = 6.0
_POSE_GRACE_S = 1.0  # a skeleton this long before the last upright moment still counts


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

    type: str  # fall_detected | alarm | recovered
    time_s: float
    fall_started_s: Optional[float]
    confidence: float
    features: Optional[PostureFeatures]


@dataclass
class _Sample:
    time_s: float
    hip_y: float
    torso_length: Optional[float]
    upright: bool


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
        self._history: Deque[_Sample] = deque()
        self._fall_started_s: Optional[float] = None
        self._fall_confirmed_s: Optional[float] = None
        self._baseline_hip_y: Optional[float] = None
        self._baseline_scale: Optional[float] = None
        self.last_features: Optional[PostureFeatures] = None
        self.max_descent = 0.0  # hip drop in torso lengths during the current candidate
        self.descent_speed = 0.0  # fastest hip drop, torso lengths per second, last 1 s
        self.last_confidence = 0.0

    # -- cues ------------------------------------------------------------------------------

    def _update_flags(self, time_s: float, features: PostureFeatures, box_height: float) -> None:
        score = features.lying_score
        if self.lying and score <= self.config.lying_exit:
            self.lying = False
        elif not self.lying and score >= self.config.lying_enter:
            self.lying = True
        if self.lying:
            self._lying_run_start = self._lying_run_start if self._lying_run_start is not None else time_s
        else:
            self._lying_run_start = None
        upright = score <= self.config.upright_below
        if upright:
            self._upright_run_start = self._upright_run_start if self._upright_run_start is not None else time_s
            self._last_upright_s = time_s
        else:
            self._upright_run_start = None
        self._history.append(_Sample(time_s, features.hip_y, features.torso_length, upright))
        while self._history and self._history[0].time_s < time_s - _HISTORY_S:
            self._history.popleft()
        self._refresh_baseline(time_s, box_height)
        self._refresh_descent_speed(time_s)

    def _refresh_baseline(self, time_s: float, box_height: float) -> None:
        """Hip height and torso length while last upright: the yardstick for 'how far they fell'."""
        upright = [s for s in self._history if s.upright]
        if not upright:
            return
        recent = [s for s in upright if s.time_s >= upright[-1].time_s - _BASELINE_WINDOW_S]
        if self.state in (FallState.UNKNOWN, FallState.UPRIGHT, FallState.LYING) or self._baseline_hip_y is None:
            self._baseline_hip_y = _median([s.hip_y for s in recent])
            lengths = [s.torso_length for s in upright if s.torso_length]
            self._baseline_scale = _median(lengths) if lengths else box_height * _TORSO_SHARE_OF_HEIGHT

    def _refresh_descent_speed(self, time_s: float) -> None:
        scale = self._baseline_scale or 1.0
        window = [s for s in self._history if s.time_s >= time_s - 1.0]
        speed = 0.0
        for older, newer in zip(window, window[1:]):
            dt = newer.time_s - older.time_s
            if dt > 0:
                speed = max(speed, (newer.hip_y - older.hip_y) / dt / scale)
        self.descent_speed = speed

    def _descent(self, features: PostureFeatures) -> float:
        if self._baseline_hip_y is None or not self._baseline_scale:
            return 0.0
        return (features.hip_y - self._baseline_hip_y) / self._baseline_scale

    def _upright_for(self, time_s: float, seconds: float) -> bool:
        return self._upright_run_start is not None and time_s - self._upright_run_start >= seconds

    def _skeleton_seen_during_fall(self) -> bool:
        """The track showed a person's skeleton since it was last upright: a detector box of a
        coat or a pillow alone never makes a fall, but MoveNet losing someone on the floor
        (it often does) must not hide their fall either."""
        since = self._fall_started_s if self._fall_started_s is not None else self._lying_run_start
        return self._last_pose_s is not None and since is not None and self._last_pose_s >= since - _POSE_GRACE_S

    def _detector_looked(self, detector_seen_s: Optional[float]) -> bool:
        """The detector scored this track since it started lying (None: detector disabled)."""
        if detector_seen_s is None:
            return True
        return self._lying_run_start is not None and detector_seen_s >= self._lying_run_start

    def _lying_for(self, time_s: float, seconds: float) -> bool:
        return self._lying_run_start is not None and time_s - self._lying_run_start >= seconds

    def _confidence(self, features: PostureFeatures) -> float:
        descent_part = min(1.0, self.max_descent / max(2 * self.config.min_descent, 1e-6))
        return round(0.7 * features.lying_score + 0.3 * descent_part, 3)

    # -- the machine -----------------------------------------------------------------------

    def update(self, time_s: float, features: Optional[PostureFeatures], box_height: float,
               detector_seen_since: Optional[float] = None) -> List[Transition]:
        """Advance to time_s. features is None when the track was not observed this frame.

        detector_seen_since: when the detector last scored this track (None if disabled);
        a fall is only confirmed once the detector has looked at the candidate.
        """
        if features is not None:
            self._update_flags(time_s, features, box_height)
            self.last_features = features
            if features.torso_angle_deg is not None:
                self._last_pose_s = time_s
        events: List[Transition] = []
        cfg = self.config
        state = self.state
        if state in (FallState.UNKNOWN, FallState.LYING):
            if self._upright_for(time_s, cfg.min_upright_s):
                self._enter(FallState.UPRIGHT, time_s)
            elif (state == FallState.UNKNOWN and self.lying and self._lying_for(time_s, cfg.confirm_s)):
                self._enter(FallState.LYING, time_s)
            elif (state == FallState.LYING and not cfg.require_upright_baseline
                  and self._lying_for(time_s, cfg.alarm_hold_s) and self.last_features is not None):
                # Found lying with no fall seen: only when the site asked for it.
                self._fall_started_s, self._fall_confirmed_s = None, time_s
                self._enter(FallState.ALARM, time_s)
                conf = round(self.last_features.lying_score, 3)
                events.append(Transition("fall_detected", time_s, None, conf, self.last_features))
                events.append(Transition("alarm", time_s, None, conf, self.last_features))
        elif state == FallState.UPRIGHT:
            if self.lying:
                self._fall_started_s = self._last_upright_s
                self.max_descent = 0.0
                self._enter(FallState.FALLING, time_s)
        elif state == FallState.FALLING:
            if features is not None:
                self.max_descent = max(self.max_descent, self._descent(features))
            since_upright = time_s - (self._last_upright_s if self._last_upright_s is not None else time_s)
            if self._upright_for(time_s, cfg.min_upright_s):
                # Back on their feet. A single upright-looking frame (pose noise on someone
                # lying towards the camera) does not cancel the candidate.
                self._enter(FallState.UPRIGHT, time_s)
            elif (self._lying_for(time_s, cfg.confirm_s) and self.max_descent >= cfg.min_descent
                  and self._skeleton_seen_during_fall()
                  and self._detector_looked(detector_seen_since)
                  and self.last_features is not None):
                self._fall_confirmed_s = time_s
                self._enter(FallState.DOWN, time_s)
                self.last_confidence = self._confidence(self.last_features)
                events.append(Transition("fall_detected", time_s, self._fall_started_s, self.last_confidence,
                                         self.last_features))
            elif since_upright > cfg.fall_window_s + cfg.confirm_s:
                # The hips never dropped, or the lying never held: bent over, lay down slowly.
                self._enter(FallState.LYING if self.lying else FallState.UNKNOWN, time_s)
        elif state in (FallState.DOWN, FallState.ALARM):
            if self._upright_for(time_s, cfg.recover_s):
                events.append(Transition("recovered", time_s, self._fall_started_s, self.last_confidence,
                                         self.last_features))
                self._enter(FallState.UPRIGHT, time_s)
            elif (state == FallState.DOWN and self._fall_confirmed_s is not None
                  and time_s - self._fall_confirmed_s >= cfg.alarm_hold_s
                  and self._upright_run_start is None):  # already back on their feet: wait for recovery
                self._enter(FallState.ALARM, time_s)
                events.append(Transition("alarm", time_s, self._fall_started_s, self.last_confidence,
                                         self.last_features))
        return events

    def _enter(self, state: FallState, time_s: float) -> None:
        if state != self.state:
            logger.debug("t=%.2f %s -> %s", time_s, self.state.value, state.value)
        self.state = state

    @property
    def is_down(self) -> bool:
        return self.state in (FallState.DOWN, FallState.ALARM) or (self.state == FallState.FALLING and self.lying)

    def summary(self) -> Tuple[str, float, float]:
        return self.state.value, self.max_descent, self.descent_speed

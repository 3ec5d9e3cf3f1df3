"""Danger zones: a person whose feet are in one, or who is heading into one, is warned.

Per person and zone: feet inside for the zone's `min_dwell_s` make an `intrusion`; outside again
for as long make `intrusion_cleared`. Outside, the feet's recent path (over the last second) is
carried forward at its current velocity: entering within `lookahead_s` makes an `approaching`
warning. Each warning is given at most once per `cooldown_s` per person and zone.
"""


from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Optional, Sequence, Set, Tuple

from edge.config import ZoneConfig
from edge.geometry import Point, point_in_polygon, time_to_enter
from edge.types import EventType

_PATH_S = 1.0  # the velocity is measured over this much of the feet's recent path ...
_MIN_PATH_S = 0.3  # ... once it spans at least this much
# Slower than this (shares of the frame per second) is standing still: the feet of someone
# standing jitter by about 0.005 of the frame a frame, 0.02-0.03 a second; walking is 0.1 or more.
_MIN_SPEED = 0.05


@dataclass
class ZoneHit:
    """A warning about one person and one danger zone."""

    type: EventType  # intrusion | approaching | intrusion_cleared
    zone: str
    track_id: int
    seconds_to_enter: Optional[float] = None  # approaching: when the feet would cross the edge


@dataclass
class _PersonInZone:
    inside_since: Optional[float] = None
    outside_since: Optional[float] = None
    intruding: bool = False  # an intrusion was raised and not yet cleared
    last_intrusion_s: Optional[float] = None
    last_approach_s: Optional[float] = None


@dataclass
class DangerWatcher:
    """One camera's danger zones against its people, frame by frame."""

    zones: Sequence[ZoneConfig]
    _people: Dict[Tuple[int, str], _PersonInZone] = field(default_factory=dict)
    _paths: Dict[int, Deque[Tuple[float, Point]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.zones = [zone for zone in self.zones if zone.kind == "danger"]

    def update(self, time_s: float, feet: Dict[int, Point], alive: Set[int]) -> List[ZoneHit]:
        """feet: track id -> where that person stands this frame, shares of the frame; alive: the
        tracks that still exist (someone out of sight for a moment keeps their state). A person
        gone (not alive) clears their intrusions."""
        if not self.zones:
            return []
        hits: List[ZoneHit] = []
        for track_id, point in feet.items():
            path = self._paths.setdefault(track_id, deque())
            path.append((time_s, point))
            while path and path[0][0] < time_s - _PATH_S:
                path.popleft()
            velocity = _velocity(path)
            for zone in self.zones:
                state = self._people.setdefault((track_id, zone.name), _PersonInZone())
                hits += self._judge(time_s, track_id, zone, state, point, velocity)
        for key in [key for key in self._people if key[0] not in alive]:
            state = self._people.pop(key)
            if state.intruding:
                hits.append(ZoneHit(EventType.INTRUSION_CLEARED, key[1], key[0]))
        for track_id in [t for t in self._paths if t not in alive]:
            del self._paths[track_id]
        return hits

    @staticmethod
    def _judge(time_s: float, track_id: int, zone: ZoneConfig, state: _PersonInZone, point: Point,
               velocity: Optional[Point]) -> List[ZoneHit]:
        def cooled(last: Optional[float]) -> bool:
            return last is None or time_s - last >= zone.cooldown_s

        if point_in_polygon(point, zone.polygon):
            state.outside_since = None
            state.inside_since = time_s if state.inside_since is None else state.inside_since
            if (not state.intruding and time_s - state.inside_since >= zone.min_dwell_s
                    and cooled(state.last_intrusion_s)):
                state.intruding, state.last_intrusion_s = True, time_s
                return [ZoneHit(EventType.INTRUSION, zone.name, track_id)]
            return []
        state.inside_since = None
        state.outside_since = time_s if state.outside_since is None else state.outside_since
        if state.intruding:
            if time_s - state.outside_since >= zone.min_dwell_s:
                state.intruding = False
                return [ZoneHit(EventType.INTRUSION_CLEARED, zone.name, track_id)]
            return []
        if zone.lookahead_s <= 0 or velocity is None or not cooled(state.last_approach_s):
            return []
        if state.last_intrusion_s is not None and not cooled(state.last_intrusion_s):
            return []  # just warned by the intrusion itself
        seconds = time_to_enter(point, velocity, zone.polygon, zone.lookahead_s)
        if seconds is None:
            return []
        state.last_approach_s = time_s
        return [ZoneHit(EventType.APPROACHING, zone.name, track_id, round(seconds, 2))]


def _velocity(path: Sequence[Tuple[float, Point]]) -> Optional[Point]:
    """The feet's velocity over the path (shares per second); None when too short or too slow."""
    (start_s, start), (end_s, end) = path[0], path[-1]
    elapsed = end_s - start_s
    if elapsed < _MIN_PATH_S:
        return None
    velocity = ((end[0] - start[0]) / elapsed, (end[1] - start[1]) / elapsed)
    if (velocity[0] ** 2 + velocity[1] ** 2) ** 0.5 < _MIN_SPEED:
        return None
    return velocity

"""Logging helpers shared by the parts that face floods (dropped events, refused commands)."""


import time
from typing import Dict, Hashable


class LogThrottle:
    """Lets a repeated message through at once, then at most once every interval_s per key:
    a flood must not write one log line per occurrence (the caller says how many it was)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: Dict[Hashable, float] = {}

    def allow(self, key: Hashable = "") -> bool:
        now = time.monotonic()
        if now - self._last.get(key, float("-inf")) < self.interval_s:
            return False
        self._last[key] = now
        return True

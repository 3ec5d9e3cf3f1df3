"""What the device page shows, handed over by the frame loop: a drawn frame per camera (only
while someone watches, at most max_fps) and the latest health report.

The frame loop writes and the HTTP threads read, never the other way: the loop draws on its
own thread (tracks change under it otherwise), and a viewer only encodes the finished picture."""


import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edge.types import FrameResult

HEALTH_EVERY_S = 1.0  # the page's health and /metrics are at most this old


class LiveBoard:
    def __init__(self, cameras: List[str], max_fps: float = 5.0, max_viewers: int = 4,
                 zones: Optional[Dict[str, Sequence[Any]]] = None) -> None:
        self.cameras = list(cameras)
        self.zones = dict(zones or {})  # camera -> its configured zones (ZoneConfig), for the zone editor
        self.min_interval_s = 1.0 / max_fps
        self.max_viewers = max_viewers
        self._changed = threading.Condition()
        self._viewers: Dict[str, int] = {}
        self._frames: Dict[str, Tuple[int, np.ndarray]] = {}  # camera -> (sequence number, drawn frame)
        self._drawn_at: Dict[str, float] = {}
        self._health: Dict[str, object] = {}
        self._health_at = -HEALTH_EVERY_S
        self.frames_drawn = 0

    # -- the frame loop's side ---------------------------------------------------------------

    def offer(self, result: FrameResult, draw: Callable[[FrameResult], np.ndarray]) -> None:
        """Called for every processed frame: costs a dict look-up unless someone is watching."""
        camera = result.camera
        if not self._viewers.get(camera):
            return
        now = time.monotonic()
        if now - self._drawn_at.get(camera, -1e9) < self.min_interval_s:
            return
        self._drawn_at[camera] = now
        canvas = draw(result)
        with self._changed:
            sequence = self._frames.get(camera, (0, canvas))[0] + 1
            self._frames[camera] = (sequence, canvas)
            self.frames_drawn += 1
            self._changed.notify_all()

    def health_due(self) -> bool:
        return time.monotonic() - self._health_at >= HEALTH_EVERY_S

    def set_health(self, report: Dict[str, object]) -> None:
        self._health_at = time.monotonic()
        self._health = report  # replaced whole, never changed in place: readers need no lock

    # -- the HTTP threads' side --------------------------------------------------------------

    def health(self) -> Dict[str, object]:
        return self._health

    @contextmanager
    def watching(self, camera: str) -> Iterator[bool]:
        """Counts a viewer while the block runs; yields False when too many already watch."""
        with self._changed:
            if sum(self._viewers.values()) >= self.max_viewers:
                allowed = False
            else:
                allowed = True
                self._viewers[camera] = self._viewers.get(camera, 0) + 1
        try:
            yield allowed
        finally:
            if allowed:
                with self._changed:
                    self._viewers[camera] -= 1

    def next_frame(self, camera: str, after: int, timeout_s: float) -> Optional[Tuple[int, np.ndarray]]:
        """The first drawn frame newer than sequence number `after`, or None after timeout_s."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                current = self._frames.get(camera)
                if current is not None and current[0] > after:
                    return current
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

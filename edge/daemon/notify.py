"""systemd's notify protocol (sd_notify(3)) over $NOTIFY_SOCKET, for `Type=notify` with a
watchdog: READY once every camera has delivered a frame, WATCHDOG pings from the frame loop
only (a hung inference or camera loop stops them and systemd restarts the service), STATUS
with the cameras and frames/s, STOPPING on the way out.

The protocol is one datagram per message on a unix socket; outside systemd (no
NOTIFY_SOCKET) every call does nothing.
"""


import logging
import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, Mapping, Optional, Set

logger = logging.getLogger(__name__)

_STATUS_EVERY_S = 10.0
EXTEND_EVERY_S = 60.0  # while a long start-up step runs, the start timeout is pushed out this often ...
EXTEND_BY_S = 180.0  # ... by this much from each message (systemd 236+: JetPack 4.6 has 237)


class SystemdNotifier:
    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self.address = address
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        # Ping at half the watchdog period, as sd_watchdog_enabled(3) advises.
        self.ping_every_s = int(watchdog_usec) / 2e6 if watchdog_usec.isdigit() and int(watchdog_usec) else None
        self._socket: Optional[socket.socket] = None
        self._failed = False
        if address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, *lines: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(lines).encode("utf-8"), self.address)
        except OSError as exc:
            if not self._failed:  # systemd gone or the socket unreachable: say so once
                logger.warning("systemd notify socket %s: %s", self.address.replace("\0", "@"), exc)
                self._failed = True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class FrameLoopNotifier:
    """What the daemon tells systemd. The frame loop calls frame(camera) after each processed
    frame; the capture workers call camera_status() when a camera goes offline or comes back.

    The watchdog is fed by processed frames, and, while every camera is offline, by a ticker:
    the capture workers are then alive and retrying (they notice a dead or silent camera
    themselves), and restarting the service would not bring a camera back; restarting it in a
    loop would hit systemd's start limit and leave nobody protected once the camera returns. A
    hung inference stops the pings, since its cameras stay online."""

    def __init__(self, notifier: SystemdNotifier, cameras: Set[str]) -> None:
        self.notifier = notifier
        self.cameras = set(cameras)
        self._seen: Set[str] = set()  # cameras that gave a frame or said they are offline
        self._offline: Set[str] = set()
        self.ready = False
        self._last_ping = float("-inf")
        self._last_status = float("-inf")
        self._frames: Dict[str, int] = {}
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if notifier.enabled and notifier.ping_every_s is not None:
            threading.Thread(target=self._tick, name="watchdog-offline", daemon=True).start()

    def frame(self, camera: str) -> None:
        if not self.notifier.enabled:
            return
        with self._lock:
            self._frames[camera] = self._frames.get(camera, 0) + 1
            self._offline.discard(camera)
            self._seen.add(camera)
            self._notify(time.monotonic())

    def camera_status(self, camera: str, status: str, reason: str = "") -> None:
        if not self.notifier.enabled:
            return
        with self._lock:
            if status == "offline":
                self._offline.add(camera)
            else:
                self._offline.discard(camera)
            self._seen.add(camera)
            self._notify(time.monotonic(), ping=False)

    def _notify(self, now: float, ping: bool = True) -> None:
        if not self.ready and self._seen >= self.cameras:
            self.ready = True
            self.notifier.send("READY=1", f"STATUS={self._status(now)}")
            self._last_status = now
        ping_every = self.notifier.ping_every_s
        if ping and self.ready and ping_every is not None and now - self._last_ping >= ping_every:
            self.notifier.send("WATCHDOG=1")
            self._last_ping = now
        if self.ready and now - self._last_status >= _STATUS_EVERY_S:
            self.notifier.send(f"STATUS={self._status(now)}")
            self._last_status = now

    def _tick(self) -> None:
        assert self.notifier.ping_every_s is not None
        while not self._closed.wait(self.notifier.ping_every_s / 2):
            with self._lock:
                if self.ready and self.cameras and self._offline >= self.cameras:
                    self._notify(time.monotonic())

    def _status(self, now: float) -> str:
        elapsed = max(now - self._started, 1e-3)
        parts = [f"{name} " + ("offline" if name in self._offline else
                               f"{self._frames.get(name, 0) / elapsed:.1f} frames/s") for name in sorted(self.cameras)]
        return "detecting: " + ", ".join(parts)

    def stopping(self) -> None:
        """The last word: STOPPING, then the socket is closed and the ticker ends."""
        self._closed.set()
        self.notifier.send("STOPPING=1", "STATUS=stopping")
        self.notifier.close()


@contextmanager
def extending_start_timeout(what: str, notifier: Optional[SystemdNotifier] = None) -> Iterator[None]:
    """Keep systemd's TimeoutStartSec from running out while `what` runs (an engine build on a Nano
    can outrun the unit's 30 minutes, and the restart then began the build again from zero): every
    EXTEND_EVERY_S, EXTEND_TIMEOUT_USEC for EXTEND_BY_S more, with a STATUS saying why. Outside
    systemd it does nothing."""
    own = notifier is None
    notifier = SystemdNotifier() if notifier is None else notifier
    if not notifier.enabled:
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def extend() -> None:
        while True:
            minutes = (time.monotonic() - started) / 60.0
            notifier.send(f"EXTEND_TIMEOUT_USEC={int(EXTEND_BY_S * 1e6)}", f"STATUS={what} ({minutes:.0f} min so far)")
            if done.wait(EXTEND_EVERY_S):
                return

    thread = threading.Thread(target=extend, name="start-timeout", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=2.0)
        if own:
            notifier.close()

"""Frames from GStreamer through a `gst-launch-1.0 ... ! fdsink` child process.

PyPI's OpenCV has no GStreamer, so the pipeline runs in its own process and writes raw
BGR frames of a fixed size to a pipe; one frame is exactly width*height*3 bytes.

Live sources: a reader thread keeps only the newest frame (a slow pipeline never builds up
lag); when the source ends, errors, hangs or stalls (no frame for stall_timeout_s) the child
is killed and started again with exponential backoff and jitter. Each outage is logged
once, counted, and reported through on_status. Files: every frame in order, then the end.
"""

from __future__ import annotations

import logging
import random
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Deque, Iterator, List, Optional

import numpy as np

from edge.capture.opencv_source import describe
from edge.capture.sources import SourceSpec, build_pipeline, on_jetson
from edge.errors import SourceError
from edge.types import Frame

logger = logging.getLogger(__name__)

StatusCallback = Callable[[str, str], None]  # (status: online | offline, reason)
_POOL_SIZE = 24  # frame buffers kept for reuse
_CREDENTIALS = re.compile(r"://[^/@\s]*@")


def _grow_pipe(stream, size: int) -> None:
    """A pipe of a few frames (Linux F_SETPIPE_SZ) halves the wake-ups between the two processes."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), 1031, min(size, 1 << 20))  # 1031 = F_SETPIPE_SZ; 1 MiB unprivileged cap
    except (ImportError, OSError, ValueError):
        pass


def gst_launch_available() -> bool:
    return shutil.which("gst-launch-1.0") is not None


class GstSource:
    def __init__(self, spec: SourceSpec, width: int, height: int, fps: int, stall_timeout_s: float = 5.0,
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0, jetson: Optional[bool] = None,
                 on_status: Optional[StatusCallback] = None, name: str = "camera") -> None:
        if not gst_launch_available():
            raise SourceError("gst-launch-1.0 not found: apt-get install gstreamer1.0-tools "
                              "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav")
        self.spec = spec
        self.width, self.height, self.fps = width, height, fps
        self.frame_bytes = width * height * 3
        self.is_live = spec.is_live
        self.name = name
        self.stall_timeout_s = stall_timeout_s
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.on_status = on_status
        if spec.kind == "v4l2" and not Path(spec.location).exists():
            raise SourceError(f"camera {spec.location} not found: check the camera is plugged in (ls /dev/video*)")
        self.pipeline = build_pipeline(spec, width, height, fps, on_jetson() if jetson is None else jetson)
        if spec.kind == "file":
            # A fixed rate gives file frames exact stream times (index / fps), like a camera.
            self.pipeline = self.pipeline.replace(" ! videoconvert", f" ! videorate ! video/x-raw,framerate={fps}/1 "
                                                  f"! videoconvert", 1)
        self.outages = 0
        self.restarts = 0
        self.dropped_frames = 0
        self._seq = 0
        self._opened = time.monotonic()
        self._lock = threading.Condition()
        self._newest: Optional[Frame] = None
        self._queue: Deque[Frame] = deque()
        self._finished = False
        self._error: Optional[str] = None
        self._stop = threading.Event()
        self._process: Optional[subprocess.Popen] = None
        self._last_frame_at = time.monotonic()
        self._stderr_tail: Deque[str] = deque(maxlen=5)
        self._online = False
        self._pool: List[np.ndarray] = []
        self._thread = threading.Thread(target=self._run, name=f"capture-{name}", daemon=True)
        self._thread.start()

    # -- consumer side ---------------------------------------------------------------------

    def poll(self, timeout_s: float = 0.0) -> Optional[Frame]:
        """The next frame (live: the newest one), or None if none came within timeout_s."""
        with self._lock:
            self._lock.wait_for(self._has_frame_or_end, timeout=timeout_s)
            if self.is_live:
                frame, self._newest = self._newest, None
                return frame
            if self._queue:
                frame = self._queue.popleft()
                self._lock.notify_all()
                return frame
            return None

    def _has_frame_or_end(self) -> bool:
        return (self._newest is not None) or bool(self._queue) or self._finished

    @property
    def finished(self) -> bool:
        with self._lock:
            return self._finished and not self._queue and self._newest is None

    def frames(self) -> Iterator[Frame]:
        while True:
            frame = self.poll(timeout_s=1.0)
            if frame is not None:
                yield frame
            elif self.finished:
                if self._error:
                    raise SourceError(self._error)
                return

    def close(self) -> None:
        self._stop.set()
        self._kill()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> GstSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the capture thread --------------------------------------------------------------------

    def _command(self) -> List[str]:
        return ["gst-launch-1.0", "-q", *shlex.split(self.pipeline), "!", "fdsink", "fd=1", "sync=false"]

    def _run(self) -> None:
        backoff = self.reconnect_min_s
        announced_down = False
        watchdog = threading.Thread(target=self._watch_for_stalls, name=f"stall-{self.name}", daemon=True)
        watchdog.start()
        while not self._stop.is_set():
            got_frames, reason = self._run_child()
            if self._stop.is_set():
                break
            if not self.is_live:
                with self._lock:
                    if reason != "end of stream":
                        self._error = f"{describe(self.spec.location)} cannot be read: {reason}"
                    self._finished = True
                    self._lock.notify_all()
                return
            was_online, self._online = self._online, False
            if got_frames:
                backoff = self.reconnect_min_s
                announced_down = False
            if was_online:
                self.outages += 1
            if not announced_down:  # each outage is logged and reported once
                announced_down = True
                logger.warning("camera %s %s (%s): reconnecting with backoff", self.name,
                               "lost" if was_online else "cannot be reached", reason)
                self._set_status("offline", reason)
            delay = min(self.reconnect_max_s, backoff) * random.uniform(0.8, 1.2)
            backoff = min(self.reconnect_max_s, backoff * 2)
            if self._stop.wait(delay):
                break
            self.restarts += 1
        with self._lock:
            self._finished = True
            self._lock.notify_all()

    def _run_child(self):
        """Run one child process until it ends; returns (got any frame, why it ended)."""
        self._stderr_tail.clear()
        try:
            self._process = subprocess.Popen(self._command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             bufsize=0)
        except OSError as exc:
            return False, f"gst-launch-1.0 failed to start ({exc})"
        process = self._process
        _grow_pipe(process.stdout, 4 * self.frame_bytes)
        threading.Thread(target=self._drain_stderr, args=(process,), daemon=True).start()
        self._last_frame_at = time.monotonic()
        got = self._read_frames(process)
        self._kill()
        code = process.wait()
        if self._stop.is_set():
            return got, "stopped"
        if getattr(process, "stalled", False):
            return got, f"no frame for {self.stall_timeout_s:.0f} s (stalled)"
        if code == 0:
            return got, "end of stream"
        detail = " / ".join(self._stderr_tail) or f"exit code {code}"
        return got, _CREDENTIALS.sub("://***@", detail)[:300]  # never log a camera password

    def _read_frames(self, process: subprocess.Popen) -> bool:
        got = False
        stream = process.stdout
        assert stream is not None
        while not self._stop.is_set():
            data = self._read_exact(stream, self.frame_bytes)
            if data is None:
                return got
            now = time.monotonic()
            self._last_frame_at = now
            image = data.reshape(self.height, self.width, 3)
            time_s = now - self._opened if self.is_live else self._seq / float(self.fps)
            frame = Frame(image=image, index=self._seq, time_s=time_s, captured_monotonic=now)
            self._seq += 1
            if not got:
                got = True
                self._online = True
                if self.outages or self.restarts:
                    logger.warning("camera %s is back", self.name)
                self._set_status("online", "frames flowing")
            with self._lock:
                if self.is_live:
                    if self._newest is not None:
                        self.dropped_frames += 1
                    self._newest = frame
                else:
                    # Files: back-pressure instead of dropping, so every frame is processed.
                    self._lock.wait_for(lambda: len(self._queue) < 8 or self._stop.is_set())
                    self._queue.append(frame)
                self._lock.notify_all()
        return got

    def _free_buffer(self, size: int) -> np.ndarray:
        """A frame buffer nobody uses any more, else a new one.

        Fresh multi-megabyte buffers cost a page fault per 4 KiB; reusing them is what lets
        720p frames keep up. A buffer is free when only this pool refers to it: every frame
        image is a view of its buffer, so any frame still held keeps the count up."""
        for buffer in self._pool:
            if sys.getrefcount(buffer) <= 3:  # the pool's list, the loop variable, getrefcount's argument
                return buffer
        buffer = np.empty(size, dtype=np.uint8)
        if len(self._pool) < _POOL_SIZE:
            self._pool.append(buffer)
        return buffer

    def _read_exact(self, stream, size: int) -> Optional[np.ndarray]:
        """One whole frame straight into a buffer (no copy, no memset), or None at the end."""
        buffer = self._free_buffer(size)
        view = memoryview(buffer)
        filled = 0
        while filled < size:
            count = stream.readinto(view[filled:])
            if not count:
                return None  # end of stream, or a partial frame: the child ended or was killed
            filled += count
        return buffer

    def _drain_stderr(self, process: subprocess.Popen) -> None:
        assert process.stderr is not None
        for line in iter(process.stderr.readline, b""):
            text = line.decode("utf-8", "replace").strip()
            if text:
                self._stderr_tail.append(text)

    def _watch_for_stalls(self) -> None:
        while not self._stop.wait(0.2):
            process = self._process
            if process is None or process.poll() is not None or not self.is_live:
                continue
            if time.monotonic() - self._last_frame_at > self.stall_timeout_s:
                process.stalled = True  # type: ignore[attr-defined]
                self._kill()

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()  # a hung child does not get to negotiate

    def _set_status(self, status: str, reason: str) -> None:
        if self.on_status is not None:
            try:
                self.on_status(status, reason)
            except Exception:
                logger.exception("camera status callback failed")

"""Camera and file frames from GStreamer, with reconnects.

One of the readers in gst_readers.py (appsink, OpenCV's CAP_GSTREAMER or a gst-launch-1.0
child) runs the pipeline; this class adds what the daemon relies on:

Live sources: a capture thread keeps only the newest frame (a slow pipeline never builds up
lag); when the source ends, errors, hangs, stalls (no frame for stall_timeout_s) or sends
frames of the wrong size, the run is stopped and started again with exponential backoff and
jitter. Each outage is logged once, counted, and reported through on_status. Files: every
frame in order, then the end. Frame images are read-only.
"""


import logging
import random
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Deque, Iterator, Optional, Tuple

from edge.capture.gst_readers import (
    END_OF_STREAM,
    PipelineReader,
    ReaderUnavailableError,
    make_reader,
    pick_reader,
    reader_available,
)
from edge.capture.uri import SourceSpec, build_pipeline, hide_credentials, on_jetson
from edge.errors import SourceError
from edge.types import Frame

logger = logging.getLogger(__name__)

StatusCallback = Callable[[str, str], None]  # (status: online | offline, reason)


def _in_process_reader(requested: str) -> str:
    """A gst-launch-1.0 child would show the camera's password to every user in `ps`: a source
    with credentials is read in this process instead, or not at all."""
    for kind in ("appsink", "opencv-gst"):
        if not reader_available(kind):
            if requested == "gst-launch":
                logger.warning("capture.reader gst-launch would show the camera password in ps: reading with %s",
                               kind)
            return kind
    raise SourceError("this source has a password, and the only reader here (gst-launch-1.0) would show it in "
                      "ps: install python3-gi and gir1.2-gstreamer-1.0 (capture.reader appsink)")


class GstSource:
    def __init__(self, spec: SourceSpec, width: int, height: int, fps: int, stall_timeout_s: float = 5.0,
                 reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0, jetson: Optional[bool] = None,
                 on_status: Optional[StatusCallback] = None, name: str = "camera", reader: str = "auto") -> None:
        try:
            self.reader = pick_reader(reader)  # appsink | opencv-gst | gst-launch
        except ReaderUnavailableError as exc:
            raise SourceError(str(exc)) from None
        self.spec = spec
        self.width, self.height, self.fps = width, height, fps
        self.is_live = spec.is_live
        self.name = name
        self.stall_timeout_s = stall_timeout_s
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.on_status = on_status
        if spec.kind == "v4l2" and not Path(spec.location).exists():
            raise SourceError(f"camera {spec.location} not found: check the camera is plugged in (ls /dev/video*)")
        self.pipeline = build_pipeline(spec, width, height, fps, on_jetson() if jetson is None else jetson)
        if self.reader == "gst-launch" and hide_credentials(self.pipeline) != self.pipeline:
            self.reader = _in_process_reader(reader)
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
        self._run_reader: Optional[PipelineReader] = None  # the current run
        self._stalled = False
        self._last_frame_at = time.monotonic()
        self._online = False
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
        self._abort_run()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> "GstSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the capture thread --------------------------------------------------------------------

    def _run(self) -> None:
        backoff = self.reconnect_min_s
        announced_down = False
        watchdog = threading.Thread(target=self._watch_for_stalls, name=f"stall-{self.name}", daemon=True)
        watchdog.start()
        while not self._stop.is_set():
            got_frames, reason = self._read_once()
            if self._stop.is_set():
                break
            if not self.is_live:
                with self._lock:
                    if reason != END_OF_STREAM:
                        self._error = f"{hide_credentials(self.spec.location)} cannot be read: {reason}"
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

    def _read_once(self) -> Tuple[bool, str]:
        """One run of the pipeline until it ends; returns (got any frame, why it ended)."""
        reader = make_reader(self.reader, self.pipeline, self.width, self.height, self.is_live)
        reader.camera = self.name
        self._stalled = False
        self._last_frame_at = time.monotonic()
        self._run_reader = reader
        if self._stop.is_set():  # close() came before this run existed
            reader.abort()
        reader.start()
        got = self._read_frames(reader)
        reason = reader.finish()
        if self._stop.is_set():
            return got, "stopped"
        if self._stalled:
            return got, f"no frame for {self.stall_timeout_s:.0f} s (stalled)"
        if reason == END_OF_STREAM:
            return got, reason
        return got, hide_credentials(reason)[:300]  # never log a camera password

    def _read_frames(self, reader: PipelineReader) -> bool:
        got = False
        while not self._stop.is_set():
            data = reader.read()
            if data is None:
                return got
            now = time.monotonic()
            self._last_frame_at = now
            image = data.reshape(self.height, self.width, 3)
            time_s = now - self._opened if self.is_live else self._seq / float(self.fps)
            frame = Frame(image=image, index=self._seq, time_s=time_s)
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

    def _watch_for_stalls(self) -> None:
        while not self._stop.wait(0.2):
            if not self.is_live or self._run_reader is None or self._stalled:
                continue
            if time.monotonic() - self._last_frame_at > self.stall_timeout_s:
                self._stalled = True
                self._abort_run()

    def _abort_run(self) -> None:
        reader = self._run_reader
        if reader is not None:
            reader.abort()

    def _set_status(self, status: str, reason: str) -> None:
        if self.on_status is not None:
            try:
                self.on_status(status, reason)
            except Exception:
                logger.exception("camera status callback failed")

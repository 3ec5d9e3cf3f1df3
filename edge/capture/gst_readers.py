"""Three ways to get raw BGR frames of a GStreamer pipeline into Python.

    appsink     PyGObject in this process (fastest: one copy per frame; PyGObject<3.51)
    opencv-gst  OpenCV's CAP_GSTREAMER, when the installed cv2 was built with it (JetPack's is)
    gst-launch  a `gst-launch-1.0 ... ! fdsink` child writing frames to a pipe (needs only the
                GStreamer tools; a hung child is simply killed, but the pipe costs about half
                the frame rate at 720p)

A reader is one run of one pipeline: start(), read() until it returns None, finish() says
why it ended. abort() may be called from another thread (the stall watchdog, close()).
GstSource (gst_source.py) does the reconnecting, queueing and time stamps on top.
"""


import ctypes
import logging
import shlex
import shutil
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections import deque
from typing import Any, Deque, Dict, List, Optional

import numpy as np

from edge.config.rules import GST_READERS

logger = logging.getLogger(__name__)

END_OF_STREAM = "end of stream"
READERS = GST_READERS  # the order `auto` tries them in
_POOL_SIZE = 24  # frame buffers the pipe reader keeps for reuse
_SINK_NAME = "fall_edge_sink"
_TEARDOWN_TIMEOUT_S = 5.0


class ReaderUnavailableError(RuntimeError):
    """This reader cannot run on this machine (a package is missing); the message names the fix."""


class PipelineReader(ABC):
    camera = ""  # the camera it reads, for the log (set by GstSource)

    def __init__(self, pipeline: str, width: int, height: int, live: bool) -> None:
        self.pipeline = pipeline
        self.width, self.height = width, height
        self.frame_bytes = width * height * 3
        self.live = live
        self._failure = ""  # why the run ended, when it was not the end of the stream
        self._aborted = threading.Event()

    @abstractmethod
    def start(self) -> None:
        """Start the pipeline; a failure is reported by read() returning None and finish()."""

    @abstractmethod
    def read(self) -> Optional[np.ndarray]:
        """The next frame as width*height*3 uint8 values (BGR, row-major), or None at the end."""

    @abstractmethod
    def finish(self) -> str:
        """Stop the pipeline and free it; returns END_OF_STREAM or why it failed."""

    def abort(self) -> None:
        """Make read() return None soon (thread-safe)."""
        self._aborted.set()

    @property
    def appsink_queue(self) -> str:
        """Live: GStreamer itself keeps only the newest frame. Files: a short queue that blocks
        the decoder (back-pressure), so no frame is lost."""
        return "max-buffers=1 drop=true" if self.live else "max-buffers=8 drop=false"

    def _wrong_size(self, got: str) -> None:
        # A pipeline whose caps changed under us (a camera mode switch, an expert's gst: string)
        # is restarted rather than fed to the models as garbage.
        self._failure = f"frame of {got}, expected {self.width}x{self.height} BGR ({self.frame_bytes} bytes)"


# -- appsink through PyGObject -------------------------------------------------------------------

_gst_lock = threading.Lock()
_gst_module: Dict[str, Any] = {}


def _gst() -> Any:
    """The Gst module, initialised once; ReaderUnavailableError when PyGObject or its typelibs are missing."""
    with _gst_lock:
        if "Gst" not in _gst_module:
            _keep_gcc_unwinder()
            try:
                import gi

                gi.require_version("Gst", "1.0")
                gi.require_version("GstApp", "1.0")
                from gi.repository import Gst, GstApp  # noqa: F401  (GstApp adds try_pull_sample)
            except (ImportError, ValueError) as exc:
                raise ReaderUnavailableError(
                    f"the appsink reader needs PyGObject and GStreamer's typelibs ({exc}): apt-get install "
                    f"libgirepository1.0-dev gir1.2-gst-plugins-base-1.0 and pip install 'PyGObject<3.51'") from exc
            Gst.init(None)
            _gst_module["Gst"] = Gst
        return _gst_module["Gst"]


def _keep_gcc_unwinder() -> None:
    """Debian's libgstreamer links libunwind, whose _Unwind_* symbols then take over C++
    exception unwinding for every library loaded later: PyTorch's ONNX export aborted the
    process (seen here with torch 2.13 after an ONNX Runtime session). Putting GCC's own
    unwinder into the global symbol scope first keeps C++ exceptions working."""
    try:
        ctypes.CDLL("libgcc_s.so.1", mode=ctypes.RTLD_GLOBAL)
    except OSError:
        pass  # not glibc/GCC: nothing to protect


class AppsinkReader(PipelineReader):
    """Frames pulled from an appsink in this process."""

    _PULL_TIMEOUT_S = 0.2  # how often a waiting read looks at the bus and at abort()
    _BUS_CHECK_EVERY = 30  # frames between bus checks while frames flow (errors, and messages piling up)

    def __init__(self, pipeline: str, width: int, height: int, live: bool) -> None:
        super().__init__(pipeline, width, height, live)
        self._gst = _gst()
        self._pipeline: Any = None
        self._sink: Any = None
        self._bus: Any = None
        self._eos = False
        self._since_bus_check = 0

    def start(self) -> None:
        gst = self._gst
        description = f"{self.pipeline} ! appsink name={_SINK_NAME} sync=false {self.appsink_queue}"
        try:
            self._pipeline = gst.parse_launch(description)
        except Exception as exc:  # GLib.Error: a missing element or a syntax error
            self._failure = f"bad pipeline: {getattr(exc, 'message', exc)}"
            return
        self._sink = self._pipeline.get_by_name(_SINK_NAME)
        self._bus = self._pipeline.get_bus()
        if self._pipeline.set_state(gst.State.PLAYING) == gst.StateChangeReturn.FAILURE:
            self._failure = self._bus_error() or "the pipeline would not start"

    def read(self) -> Optional[np.ndarray]:
        if self._sink is None or self._failure:
            return None
        gst = self._gst
        while not self._aborted.is_set():
            sample = self._sink.try_pull_sample(int(self._PULL_TIMEOUT_S * gst.SECOND))
            if sample is not None:
                self._since_bus_check += 1
                if self._since_bus_check >= self._BUS_CHECK_EVERY:
                    self._since_bus_check = 0
                    if self._check_bus():
                        return None
                buffer = sample.get_buffer()
                size = buffer.get_size()
                if size != self.frame_bytes:
                    self._wrong_size(f"{size} bytes")
                    return None
                # extract_dup is the one copy out of GStreamer's memory; the frame is read-only.
                return np.frombuffer(buffer.extract_dup(0, size), dtype=np.uint8)
            if self._sink.is_eos():
                self._eos = True
                return None
            if self._check_bus():
                return None
        return None

    def _check_bus(self) -> bool:
        """Pop every waiting message; True when one was an error (the run is over)."""
        error = self._bus_error()
        if error:
            self._failure = error
        return bool(error)

    def _bus_error(self) -> str:
        gst = self._gst
        if self._bus is None:
            return ""
        error = ""
        while True:
            message = self._bus.pop()
            if message is None:
                return error
            if message.type == gst.MessageType.ERROR and not error:
                gerror, _debug = message.parse_error()
                error = f"{message.src.get_name()}: {gerror.message}"
            elif message.type == gst.MessageType.EOS:
                self._eos = True

    def finish(self) -> str:
        if self._pipeline is not None:
            pipeline, self._pipeline, self._sink = self._pipeline, None, None
            # An element stuck in a dead network call can block the state change; never let it
            # block the capture thread (the stuck pipeline is leaked and logged instead).
            teardown = threading.Thread(target=pipeline.set_state, args=(self._gst.State.NULL,), daemon=True)
            teardown.start()
            teardown.join(_TEARDOWN_TIMEOUT_S)
            if teardown.is_alive():
                logger.error("camera %s: its GStreamer pipeline did not stop within %.0f s; leaving it behind",
                             self.camera or "?", _TEARDOWN_TIMEOUT_S)
        if self._failure:
            return self._failure
        return END_OF_STREAM if self._eos else "stopped"


# -- OpenCV's GStreamer backend ---------------------------------------------------------------------

def opencv_has_gstreamer() -> bool:
    try:
        import cv2
    except ImportError:
        return False
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


class OpenCVGstReader(PipelineReader):
    """cv2.VideoCapture(pipeline, CAP_GSTREAMER). Its read() cannot be interrupted, so a stalled
    source ends only when GStreamer itself gives up (rtspsrc's TCP timeout); appsink is preferred."""

    def __init__(self, pipeline: str, width: int, height: int, live: bool) -> None:
        super().__init__(pipeline, width, height, live)
        self._capture: Any = None
        self._eos = False

    def start(self) -> None:
        import cv2

        self._capture = cv2.VideoCapture(f"{self.pipeline} ! appsink sync=false {self.appsink_queue}",
                                         cv2.CAP_GSTREAMER)
        if not self._capture.isOpened():
            self._failure = "OpenCV could not open the pipeline (run it with gst-launch-1.0 to see why)"

    def read(self) -> Optional[np.ndarray]:
        if self._capture is None or self._failure or self._aborted.is_set():
            return None
        ok, image = self._capture.read()
        if not ok or image is None:
            self._eos = True
            return None
        if image.shape != (self.height, self.width, 3):
            self._wrong_size("shape " + "x".join(str(n) for n in image.shape))
            return None
        return image.reshape(-1)

    def finish(self) -> str:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        if self._failure:
            return self._failure
        return END_OF_STREAM if self._eos else "stopped"


# -- a gst-launch-1.0 child process -------------------------------------------------------------------

def gst_launch_available() -> bool:
    return shutil.which("gst-launch-1.0") is not None


def _grow_pipe(stream: Any, size: int) -> None:
    """A pipe of a few frames (Linux F_SETPIPE_SZ) halves the wake-ups between the two processes."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), 1031, min(size, 1 << 20))  # 1031 = F_SETPIPE_SZ; 1 MiB unprivileged cap
    except (ImportError, OSError, ValueError):
        pass


class GstLaunchReader(PipelineReader):
    """Frames of exactly width*height*3 bytes from a child's stdout. The byte stream has no frame
    boundaries, so the caps filter at the end of every built pipeline is what fixes the size."""

    def __init__(self, pipeline: str, width: int, height: int, live: bool) -> None:
        super().__init__(pipeline, width, height, live)
        self._process: Optional[subprocess.Popen] = None
        self._stderr_tail: Deque[str] = deque(maxlen=5)
        self._pool: List[np.ndarray] = []

    def start(self) -> None:
        command = ["gst-launch-1.0", "-q", *shlex.split(self.pipeline), "!", "fdsink", "fd=1", "sync=false"]
        try:
            self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        except OSError as exc:
            self._failure = f"gst-launch-1.0 failed to start ({exc})"
            return
        _grow_pipe(self._process.stdout, 4 * self.frame_bytes)
        threading.Thread(target=self._drain_stderr, args=(self._process,), daemon=True).start()

    def read(self) -> Optional[np.ndarray]:
        """One whole frame straight into a pooled buffer (no copy, no memset), or None at the end."""
        if self._process is None or self._aborted.is_set():
            return None
        stream = self._process.stdout
        assert stream is not None
        buffer = self._free_buffer()
        view = memoryview(buffer)
        filled = 0
        while filled < self.frame_bytes:
            count = stream.readinto(view[filled:])
            if not count:
                return None  # end of stream, or a partial frame: the child ended or was killed
            filled += count
        return buffer

    def _free_buffer(self) -> np.ndarray:
        """A frame buffer nobody uses any more, else a new one.

        Fresh multi-megabyte buffers cost a page fault per 4 KiB; reusing them is what lets
        720p frames keep up. A buffer is free when only this pool refers to it: every frame
        image is a view of its buffer, so any frame still held keeps the count up."""
        for buffer in self._pool:
            if sys.getrefcount(buffer) <= 3:  # the pool's list, the loop variable, getrefcount's argument
                return buffer
        buffer = np.empty(self.frame_bytes, dtype=np.uint8)
        if len(self._pool) < _POOL_SIZE:
            self._pool.append(buffer)
        return buffer

    def abort(self) -> None:
        super().abort()
        self._kill()  # a hung child does not get to negotiate

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def finish(self) -> str:
        process = self._process
        if process is None:
            return self._failure or "gst-launch-1.0 did not start"
        self._kill()
        code = process.wait()
        if self._failure:
            return self._failure
        if code == 0:
            return END_OF_STREAM
        return " / ".join(self._stderr_tail) or f"exit code {code}"

    def _drain_stderr(self, process: subprocess.Popen) -> None:
        assert process.stderr is not None
        for line in iter(process.stderr.readline, b""):
            text = line.decode("utf-8", "replace").strip()
            if text:
                self._stderr_tail.append(text)


_CLASSES = {"appsink": AppsinkReader, "opencv-gst": OpenCVGstReader, "gst-launch": GstLaunchReader}


def reader_available(kind: str) -> str:
    """'' when the reader can run here, else the one-line reason with the fix. The one place
    that checks: GstSource picks its reader once (pick_reader), every run then just makes it."""
    if kind == "appsink":
        try:
            _gst()
        except ReaderUnavailableError as exc:
            return str(exc)
    elif kind == "opencv-gst":
        if not opencv_has_gstreamer():
            return ("the installed OpenCV has no GStreamer (PyPI's wheels have none): use capture.reader "
                    "appsink or gst-launch, or install JetPack's python3-opencv")
    elif not gst_launch_available():
        return ("gst-launch-1.0 not found: apt-get install gstreamer1.0-tools gstreamer1.0-plugins-good "
                "gstreamer1.0-plugins-bad gstreamer1.0-libav")
    return ""


def pick_reader(requested: str) -> str:
    """The reader to use for `requested` (auto/gst: the first one that runs here), or
    ReaderUnavailableError naming what to install."""
    if requested in _CLASSES:
        problem = reader_available(requested)
        if problem:
            raise ReaderUnavailableError(f"capture.reader {requested}: {problem}")
        return requested
    for kind in READERS:
        if not reader_available(kind):
            return kind
    raise ReaderUnavailableError("no GStreamer reader can run here: apt-get install gstreamer1.0-tools "
                                 "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-libav")


def make_reader(kind: str, pipeline: str, width: int, height: int, live: bool) -> PipelineReader:
    return _CLASSES[kind](pipeline, width, height, live)

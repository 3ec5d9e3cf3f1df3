"""Video sources through OpenCV: files, camera indexes, RTSP URLs (GStreamer comes later).

Files are read at full speed with their own timestamps (frame index / fps), so evaluation
is repeatable. Live sources are read on a thread that keeps only the newest frame, so a
slow pipeline never builds up lag.
"""


import logging
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Union

import cv2
import numpy as np

from edge.capture.uri import hide_credentials
from edge.decoding.letterbox import ensure_bgr
from edge.errors import SourceError
from edge.types import Frame

logger = logging.getLogger(__name__)

_DEFAULT_FPS = 25.0
_LIVE_FIRST_FRAME_TIMEOUT_S = 10.0


def iter_video_frames(path: Union[str, Path], step: int = 1, seek: bool = False) -> Iterator[np.ndarray]:
    """Every `step`-th frame of a video file (BGR), from the first; a file that cannot be opened
    is a SourceError. seek=True jumps to each instead of decoding the frames between (far-apart
    frames of a long file)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise SourceError(f"video {path} cannot be opened: check the path and format")
    step = max(1, int(step))
    try:
        index = 0
        while True:
            if seek:
                capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = capture.read()
            if not ok:
                return
            if seek or index % step == 0:
                yield frame
            index += step if seek else 1
    finally:
        capture.release()


# Reads that may fail in a row inside a file before the rest of it is given up: 10 s at 30 frames/s.
_MAX_UNREADABLE_FRAMES = 300


class OpenCvSource:
    """Iterate Frames from a file, a camera or a stream."""

    def __init__(self, source: Union[str, int], pad_end_s: float = 0.0, realtime: bool = False) -> None:
        self.source = source
        self.shown = hide_credentials(source)  # for logs, errors and thread names: no RTSP password
        self.pad_end_s = pad_end_s
        self.frames_read = 0
        self.realtime = realtime
        self.is_live = isinstance(source, int) or "://" in str(source)
        self.dropped_frames = 0  # live frames replaced by a newer one before the pipeline took them
        if not self.is_live:
            path = Path(str(source))
            if not path.exists():
                raise SourceError(f"video file {path} not found: check the path")
            if not path.is_file():
                raise SourceError(f"video source {path} is not a file: pass a video file, camera index or URL")
        self._capture = cv2.VideoCapture(source)
        if not self._capture.isOpened():
            self._capture.release()
            if isinstance(source, int):
                raise SourceError(f"camera {source} cannot be opened: check that /dev/video{source} exists "
                                  f"and no other program holds it")
            if self.is_live:
                raise SourceError(f"stream {self.shown} cannot be opened: check the URL, the credentials "
                                  f"and that the camera is reachable")
            raise SourceError(f"video file {source} cannot be decoded: it is corrupt or not a video "
                              f"(check it with ffprobe)")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 1.0 <= fps <= 240.0 else _DEFAULT_FPS
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        logger.info("opened %s (%s, %.2f fps)", self.shown, "live" if self.is_live else "file", self.fps)

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> "OpenCvSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def frames(self) -> Iterator[Frame]:
        if self.is_live:
            yield from self._live_frames()
        else:
            yield from self._file_frames()

    def _file_frames(self) -> Iterator[Frame]:
        index = 0
        last: Optional[np.ndarray] = None
        started = time.monotonic()
        unreadable_from: Optional[int] = None  # the first of a run of frames the decoder refused
        while True:
            ok, image = self._capture.read()
            if not ok or image is None:
                # A damaged frame in the middle of a file fails its read while the frames behind it
                # decode: step past it (one corrupt frame ended the run, the fall after it missed).
                # Only the file's own frame count tells a damaged frame from the end.
                gap = 0 if unreadable_from is None else index - unreadable_from
                if self.frame_count and index < self.frame_count - 1 and gap < _MAX_UNREADABLE_FRAMES:
                    unreadable_from = index if unreadable_from is None else unreadable_from
                    index += 1
                    continue
                if unreadable_from is not None:
                    index = unreadable_from  # the file's readable frames end where the gap began
                break
            if unreadable_from is not None:
                logger.warning("%s: frames %d to %d could not be decoded (the file is damaged there); skipped",
                               self.shown, unreadable_from, index - 1)
                unreadable_from = None
            try:
                image = ensure_bgr(image)
            except ValueError:
                logger.warning("%s: frame %d is unreadable; skipped", self.shown, index)
                index += 1
                continue
            time_s = index / self.fps
            if self.realtime:
                delay = started + time_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            last = image
            yield Frame(image=image, index=index, time_s=time_s)
            index += 1
        self.frames_read = index  # the file's own frames (the padding below is not footage)
        if last is None:
            raise SourceError(f"video file {self.source} has no readable frames: it is empty, truncated or corrupt")
        if self.frame_count and index < self.frame_count - 1:
            logger.warning("%s: read %d of %d frames; the file may be truncated", self.source, index, self.frame_count)
        # Hold the last frame so a fall at the very end can still be confirmed (evaluation).
        for pad in range(int(round(self.pad_end_s * self.fps))):
            yield Frame(image=last, index=index + pad, time_s=(index + pad) / self.fps)

    def _live_frames(self) -> Iterator[Frame]:
        latest: dict = {}
        condition = threading.Condition()
        stop = threading.Event()
        opened = time.monotonic()

        def reader() -> None:
            index = 0
            while not stop.is_set():
                ok, image = self._capture.read()
                with condition:
                    if not ok or image is None:
                        latest["ended"] = True
                        condition.notify_all()
                        return
                    latest["frame"] = Frame(image=image, index=index, time_s=time.monotonic() - opened)
                    condition.notify_all()
                index += 1

        thread = threading.Thread(target=reader, name=f"capture-{self.shown}", daemon=True)
        thread.start()
        last_index = -1

        def has_news() -> bool:
            return bool(latest.get("ended")) or ("frame" in latest and latest["frame"].index != last_index)

        try:
            while True:
                with condition:
                    condition.wait_for(has_news, timeout=_LIVE_FIRST_FRAME_TIMEOUT_S)
                    frame = latest.get("frame")
                    ended = latest.get("ended", False)
                if frame is not None and frame.index != last_index:
                    self.dropped_frames += max(0, frame.index - last_index - 1)
                    last_index = frame.index
                    try:
                        yield Frame(image=ensure_bgr(frame.image), index=frame.index, time_s=frame.time_s)
                    except ValueError:
                        logger.warning("%s: unreadable frame %d skipped", self.shown, frame.index)
                    continue
                if ended:
                    if last_index < 0:
                        raise SourceError(f"{self.shown} opened but sent no frames: check the camera")
                    logger.warning("%s ended", self.shown)
                    return
                raise SourceError(f"{self.shown} sent no frame for {_LIVE_FIRST_FRAME_TIMEOUT_S:.0f} s: "
                                  f"check the camera and the network")
        finally:
            stop.set()


def parse_source(text: str) -> Union[str, int]:
    """'0' -> camera 0; anything else is a path or URL."""
    return int(text) if text.isdigit() else text

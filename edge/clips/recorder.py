"""Event clips (README "Event clips"): each camera keeps its last `clip.pre_s` seconds in a ring
buffer; a fall or an intrusion opens a clip that takes those and the next `clip.post_s` seconds,
then a writer thread draws, encodes, stores (owner-only, bounded by count and age) and sends it.

The frame loop pays for a reference to the frame scaled to `clip.width` and a copy of what is
drawn on it (boxes, labels, skeletons): drawing and encoding happen on the writer thread."""


import base64
import logging
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional, Sequence

import cv2
import numpy as np

from edge.clips.encode import encode_clip
from edge.config import ClipConfig
from edge.config.schema import CLIP_MAX_WIDTH
from edge.private import private_folder
from edge.types import EventType, FallEvent, FrameResult
from edge.viz.draw import DrawnTrack, draw_frame, drawn_tracks

logger = logging.getLogger(__name__)

CLIP_EVENTS = (EventType.FALL_DETECTED, EventType.INTRUSION)
CLOSE_TIMEOUT_S = 8.0  # at a stop the writer gets this long, then its encoder is killed
_MAX_WAITING_CLIPS = 8  # clips waiting for the writer; more (a burst of events) drops the oldest
_TIME_EPSILON_S = 1e-3


@dataclass
class _Kept:
    time_s: float
    image: np.ndarray  # scaled to clip.width
    scale: float  # its size against the frame the tracks were measured on
    tracks: List[DrawnTrack]


@dataclass
class _Open:
    event: FallEvent
    event_time_s: float
    end_s: float
    frames: List[_Kept]


@dataclass
class ClipJob:
    """A finished clip's frames, waiting for the writer."""

    event: FallEvent
    event_time_s: float
    frames: List[_Kept]
    zones: Sequence


@dataclass
class CameraRing:
    """One camera's ring buffer and the clips it is filling."""

    config: ClipConfig
    on_done: Callable[[ClipJob], None]
    _ring: Deque[_Kept] = field(default_factory=deque)
    _open: List[_Open] = field(default_factory=list)
    _next_keep_s: float = float("-inf")
    zones: Sequence = ()

    def offer(self, result: FrameResult) -> None:
        time_s = result.frame.time_s
        self.zones = result.zones
        if time_s + _TIME_EPSILON_S < self._next_keep_s and not self._open_ends_by(time_s):
            return
        self._next_keep_s = time_s + 1.0 / self.config.fps
        image = result.frame.image
        scale = 1.0
        # width 0 keeps frames as captured, but never wider than the config's memory rule counted
        width = self.config.width or min(image.shape[1], CLIP_MAX_WIDTH)
        if image.shape[1] != width:
            scale = width / image.shape[1]
            height = max(2, int(round(image.shape[0] * scale / 2)) * 2)
            # INTER_LINEAR: 0.7 ms for 768x576 -> 640x480 where INTER_AREA takes 3.5 ms of the frame loop
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        kept = _Kept(time_s, image, scale, drawn_tracks(result))
        self._ring.append(kept)
        while self._ring and self._ring[0].time_s < time_s - self.config.pre_s - _TIME_EPSILON_S:
            self._ring.popleft()
        still_open = []
        for clip in self._open:
            clip.frames.append(kept)
            if time_s >= clip.end_s - _TIME_EPSILON_S:
                self._finish(clip)
            else:
                still_open.append(clip)
        self._open = still_open

    def _open_ends_by(self, time_s: float) -> bool:
        return any(time_s >= clip.end_s - _TIME_EPSILON_S for clip in self._open)

    def start(self, event: FallEvent) -> None:
        """A clip of this event: what the ring holds now, and what comes in the next post_s."""
        clip = _Open(event, event.stream_time_s, event.stream_time_s + self.config.post_s, list(self._ring))
        if self.config.post_s <= 0:
            self._finish(clip)
        else:
            self._open.append(clip)

    def flush(self) -> None:
        """The stream ended: clips still open are written with what they have."""
        for clip in self._open:
            self._finish(clip)
        self._open = []

    def _finish(self, clip: _Open) -> None:
        if clip.frames:
            self.on_done(ClipJob(clip.event, clip.event_time_s, clip.frames, self.zones))

    @property
    def memory_bytes(self) -> int:
        return sum(kept.image.nbytes for kept in self._ring)


def real_time_indices(times_s: Sequence[float], fps: float) -> List[int]:
    """For each frame of a video at fps from the first picture's time to the last's: the index of
    the latest picture taken by then (times_s rising). The video lasts as long as they spanned."""
    count = max(1, int(round((times_s[-1] - times_s[0]) * fps)) + 1)
    out, index = [], 0
    for tick in range(count):
        moment = times_s[0] + tick / fps + _TIME_EPSILON_S
        while index + 1 < len(times_s) and times_s[index + 1] <= moment:
            index += 1
        out.append(index)
    return out


class ClipService:
    """Every camera's ring, and the writer thread that draws, encodes, stores and sends clips."""

    def __init__(self, config: ClipConfig, privacy: bool, send: Optional[Callable[[str, Dict[str, object]], None]],
                 device: str = "") -> None:
        self.config = config
        self.privacy = privacy
        self.send = send
        self.device = device
        self.folder = Path(config.dir)
        self._rings: Dict[str, CameraRing] = {}
        self._jobs: "queue.Queue[Optional[ClipJob]]" = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self.problem: Optional[str] = None  # why the last clip was not written (health), None once one is
        self.last_clip: Optional[Dict[str, object]] = None
        self._cancel = threading.Event()  # set at shutdown when the writer overstays: the encoder is killed
        self._writer = threading.Thread(target=self._run, name="clip-writer", daemon=True)
        self._writer.start()

    def ring(self, camera: str) -> CameraRing:
        if camera not in self._rings:
            self._rings[camera] = CameraRing(self.config, self._queue)
        return self._rings[camera]

    def offer(self, result: FrameResult) -> None:
        self.ring(result.camera).offer(result)

    def start(self, event: FallEvent) -> None:
        if event.type in CLIP_EVENTS:
            self.ring(event.camera).start(event)

    def _queue(self, job: ClipJob) -> None:
        with self._lock:
            if self._waiting >= _MAX_WAITING_CLIPS:
                logger.warning("clip of event %s not written: %d clips already wait for the writer",
                               job.event.event_id, self._waiting)
                return
            self._waiting += 1
        self._jobs.put(job)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Write the clips still open (the stream ended) and wait for the writer, at most timeout_s:
        then the encoder still running is killed, so the daemon's whole stop fits the unit's
        TimeoutStopSec (20 s) and the publisher still stores every event after this."""
        for ring in self._rings.values():
            ring.flush()
        self._jobs.put(None)
        self._writer.join(timeout=timeout_s)
        if self._writer.is_alive():
            self._cancel.set()
            self._writer.join(timeout=3.0)
            logger.warning("clips: the writer did not finish within %.0f s of the stop; the clip being encoded "
                           "and %d waiting were given up", timeout_s, self._jobs.qsize())

    # -- the writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None or self._cancel.is_set():
                return
            try:
                self._write(job)
            except Exception as exc:  # noqa: BLE001 - one bad clip must not stop the next ones
                self.problem = f"clip not written: {exc}"
                logger.warning("clip of event %s not written: %s", job.event.event_id, exc)
            finally:
                with self._lock:
                    self._waiting -= 1

    def _write(self, job: ClipJob) -> None:
        pictures = [self._draw(kept, job) for kept in job.frames]
        # Each picture shown for as long as it stood: at 1 processed frame a second a 10 s clip was
        # 8 pictures played in 0.8 s (issue 41, defect 1). Repeats cost the encoder almost nothing.
        frames = [pictures[index] for index in real_time_indices([kept.time_s for kept in job.frames],
                                                                  self.config.fps)]
        private_folder(self.folder)
        path, codec = encode_clip(frames, self.config.fps, self.folder / job.event.event_id, cancel=self._cancel)
        path.chmod(0o600)
        data = path.read_bytes()
        size = len(data)
        self._prune()
        duration_s = len(frames) / self.config.fps
        too_large = size > self.config.max_send_bytes
        reason = (f"{size / 1e6:.1f} MB is over clip.max_send_bytes ({self.config.max_send_bytes / 1e6:.1f} MB): "
                  f"kept on the device as {path.name}") if too_large else None
        self.problem = None
        payload: Dict[str, object] = {
            "event_id": str(uuid.uuid4()), "type": "clip", "clip_of": job.event.event_id,
            "event_type": job.event.type.value, "device": self.device, "camera": job.event.camera,
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "codec": codec, "file": path.name, "frames": len(frames), "pictures": len(pictures),
            "width": frames[0].shape[1],
            "height": frames[0].shape[0], "duration_s": round(duration_s, 2),
            "pre_s": round(max(0.0, job.event_time_s - job.frames[0].time_s), 2),
            "bytes": size, "kept_on_device": too_large, "reason": reason,
            "data": None if too_large else base64.b64encode(data).decode("ascii"),
        }
        self.last_clip = {k: v for k, v in payload.items() if k != "data"}
        logger.info("clip of %s %s: %s, %d frames, %.1f s, %d bytes%s", job.event.type.value, job.event.event_id,
                    codec, len(frames), duration_s, size, " (kept on the device: too large to send)" if too_large
                    else "")
        if self.send is not None:
            self.send(job.event.camera, payload)

    def _draw(self, kept: _Kept, job: ClipJob) -> np.ndarray:
        canvas = np.zeros_like(kept.image) if self.privacy else kept.image.copy()
        return draw_frame(canvas, kept.tracks, job.zones, kept.time_s, scale=kept.scale)

    def _prune(self) -> None:
        now = time.time()
        files = sorted(((p.stat().st_mtime, p) for p in self.folder.iterdir() if p.suffix in (".mp4", ".webm")),
                       reverse=True)
        for index, (modified, path) in enumerate(files):
            if index >= self.config.keep or now - modified > self.config.max_age_days * 86400.0:
                try:
                    path.unlink()
                except FileNotFoundError:  # (unlink's missing_ok is Python 3.8+; JetPack 4.6 has 3.6)
                    pass

    def memory_bytes(self) -> int:
        return sum(ring.memory_bytes for ring in self._rings.values())

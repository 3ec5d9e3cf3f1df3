"""Frames to a video file the control room's browser plays.

H.264 in MP4 through a `gst-launch-1.0` child reading raw frames on its stdin, with the first
H.264 encoder this machine has: the Jetson's hardware encoder (nvv4l2h264enc, JetPack's
GStreamer), x264enc (gstreamer1.0-plugins-ugly) or openh264enc (gstreamer1.0-plugins-bad).
Without GStreamer or any of them: VP8 in WebM through OpenCV's own FFmpeg (PyPI's OpenCV has no
H.264 encoder). Browsers play both."""


import functools
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

logger = logging.getLogger(__name__)

H264_ENCODERS = ("nvv4l2h264enc", "x264enc", "openh264enc")
_ENCODE_BASE_S = 20.0
_ENCODE_PER_FRAME_S = 0.2


@functools.lru_cache(maxsize=None)
def h264_encoder() -> Optional[str]:
    """The first GStreamer H.264 encoder element this machine has, or None."""
    inspect = shutil.which("gst-inspect-1.0")
    if inspect is None or shutil.which("gst-launch-1.0") is None:
        return None
    for element in H264_ENCODERS:
        found = subprocess.run([inspect, "--exists", element], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if found.returncode == 0:
            return element
    return None


def _encoder_stage(element: str) -> List[str]:
    if element == "nvv4l2h264enc":  # the Jetson's encoder takes frames in NVMM memory
        return ["video/x-raw,format=I420", "!", "nvvidconv", "!", "video/x-raw(memory:NVMM),format=I420", "!",
                element, "insert-sps-pps=true"]
    if element == "x264enc":
        return ["video/x-raw,format=I420", "!", element, "speed-preset=veryfast", "tune=zerolatency"]
    return ["video/x-raw,format=I420", "!", element]


def _feed(child: subprocess.Popen, frames: List[np.ndarray]) -> None:
    """The encoder's stdin: every frame, then end of stream (-e makes mp4mux write its index)."""
    assert child.stdin is not None
    try:
        for frame in frames:
            child.stdin.write(np.ascontiguousarray(frame).tobytes())
        child.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the encoder ended (or was killed): its exit status says why


def encode_deadline_s(frame_count: int) -> float:
    """How long an encoder may take for a clip: far above a real encode (about 1-2 s for 100
    frames of 640x480 on two cores), far below forever."""
    return _ENCODE_BASE_S + _ENCODE_PER_FRAME_S * frame_count


def _run_encoder(command: List[str], frames: List[np.ndarray], errors, cancel: Optional[threading.Event],
                 element: str) -> int:
    """Feed the frames to the encoder child and wait for it, within encode_deadline_s; a child
    that hangs (or a cancel at shutdown) is killed and raised as OSError."""
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
    feeder = threading.Thread(target=_feed, args=(child, frames), name="clip-encoder-feed", daemon=True)
    feeder.start()
    deadline = time.monotonic() + encode_deadline_s(len(frames))
    while child.poll() is None:
        if cancel is not None and cancel.is_set():
            why = "stopped at shutdown"
        elif time.monotonic() > deadline:
            why = f"hung: killed after {encode_deadline_s(len(frames)):.0f} s"
        else:
            time.sleep(0.05)
            continue
        child.kill()
        child.wait()
        feeder.join(timeout=5.0)
        raise OSError(f"{element} {why}")
    feeder.join(timeout=5.0)
    return child.returncode


def _private_target(target: Path) -> None:
    """Made owner-only before the encoder writes it (filesink keeps an existing file's mode)."""
    os.close(os.open(str(target), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    target.chmod(0o600)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def encode_clip(frames: List[np.ndarray], fps: float, stem: Path,
                cancel: Optional[threading.Event] = None) -> Tuple[Path, str]:
    """Write the frames (BGR, one size, even sides) to stem.mp4 (H.264) or stem.webm (VP8);
    returns the file and its "codec/container". Raises OSError when nothing could write it (no
    partial file is left behind), when the encoder hangs (it is killed) or at `cancel`."""
    height, width = frames[0].shape[:2]
    element = h264_encoder()
    if element is not None:
        target = stem.with_suffix(".mp4")
        rate = f"{int(round(fps * 1000))}/1000"
        # At a lower priority than the frame loop: a clip can wait a second, detection cannot.
        niced = ["nice", "-n", "10"] if shutil.which("nice") else []
        command = [*niced, "gst-launch-1.0", "-q", "-e", "fdsrc", "fd=0", "!", "rawvideoparse", f"width={width}",
                   f"height={height}", "format=bgr", f"framerate={rate}", "!", "videoconvert", "!",
                   *_encoder_stage(element), "!", "h264parse", "!", "mp4mux", "!", "filesink",
                   f"location={target}"]
        _private_target(target)
        # A file, not a pipe: a chatty encoder cannot block it. Beside the clip, where the service
        # can write whatever its sandbox leaves of /tmp.
        with tempfile.TemporaryFile(dir=stem.parent) as errors:
            try:
                returncode = _run_encoder(command, frames, errors, cancel, element)
            except OSError:
                _remove(target)
                raise
            if returncode == 0 and target.is_file() and target.stat().st_size > 0:
                return target, "h264/mp4"
            _remove(target)
            errors.seek(0)
            message = errors.read().decode("utf-8", "replace").strip().splitlines()
        logger.warning("clip: %s failed (%s); writing VP8/WebM instead", element, message[-1] if message else
                       f"exit status {returncode}")
    target = stem.with_suffix(".webm")
    _private_target(target)
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"VP80"), fps, (width, height))
    if not writer.isOpened():
        _remove(target)
        raise OSError("no video encoder here: install GStreamer with x264enc or openh264enc")
    for frame in frames:
        writer.write(frame)
    writer.release()
    if not target.is_file() or target.stat().st_size == 0:
        _remove(target)
        raise OSError("the VP8/WebM writer wrote nothing (a full disk?)")
    return target, "vp8/webm"

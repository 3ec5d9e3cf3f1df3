"""Frames to a video file the control room's browser plays.

H.264 in MP4 through a `gst-launch-1.0` child reading raw frames on its stdin, with the first
H.264 encoder this machine has: the Jetson's hardware encoder (nvv4l2h264enc, JetPack's
GStreamer), x264enc (gstreamer1.0-plugins-ugly) or openh264enc (gstreamer1.0-plugins-bad).
Without GStreamer or any of them: VP8 in WebM through OpenCV's own FFmpeg (PyPI's OpenCV has no
H.264 encoder). Browsers play both."""


import functools
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import cv2
import numpy as np

logger = logging.getLogger(__name__)

H264_ENCODERS = ("nvv4l2h264enc", "x264enc", "openh264enc")
_ENCODE_TIMEOUT_S = 120.0


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


def encode_clip(frames: List[np.ndarray], fps: float, stem: Path) -> Tuple[Path, str]:
    """Write the frames (BGR, one size, even sides) to stem.mp4 (H.264) or stem.webm (VP8);
    returns the file and its "codec/container". Raises OSError when nothing could write it."""
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
        # A file, not a pipe: a chatty encoder cannot block it. Beside the clip, where the service
        # can write whatever its sandbox leaves of /tmp.
        with tempfile.TemporaryFile(dir=stem.parent) as errors:
            child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
            try:
                assert child.stdin is not None
                for frame in frames:
                    child.stdin.write(np.ascontiguousarray(frame).tobytes())
                child.stdin.close()  # end of stream: -e makes mp4mux write its index
                child.wait(timeout=_ENCODE_TIMEOUT_S)
            except (BrokenPipeError, subprocess.TimeoutExpired) as exc:
                child.kill()
                child.wait()
                raise OSError(f"{element} stopped while encoding ({type(exc).__name__})") from None
            if child.returncode == 0 and target.is_file() and target.stat().st_size > 0:
                return target, "h264/mp4"
            errors.seek(0)
            message = errors.read().decode("utf-8", "replace").strip().splitlines()
        logger.warning("clip: %s failed (%s); writing VP8/WebM instead", element, message[-1] if message else
                       f"exit status {child.returncode}")
    target = stem.with_suffix(".webm")
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"VP80"), fps, (width, height))
    if not writer.isOpened():
        raise OSError("no video encoder here: install GStreamer with x264enc or openh264enc")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return target, "vp8/webm"

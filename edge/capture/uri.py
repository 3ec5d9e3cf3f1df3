"""Source URIs and the GStreamer pipelines that turn them into BGR frames.

    csi://0                     Jetson CSI camera (nvarguscamerasrc sensor-id=0)
    v4l2:///dev/video0, 0       USB camera
    rtsp://user:pass@host/path  IP camera (H.264 or H.265)
    file:///clip.mp4, clip.mp4  video file
    test://                     videotestsrc (smpte bars)
    gst:<pipeline>              an expert's own pipeline; it must end in raw video

Every pipeline ends in BGR frames of the configured size; live ones also at the configured
frame rate. On a Jetson, decoding and scaling stay in NVMM memory (nvv4l2decoder, nvvidconv).
"""


import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from edge.errors import SourceError

KINDS = ("csi", "v4l2", "rtsp", "file", "test", "gst")
# In a gst: pipeline, these make it a live source.
_LIVE_GST_MARKERS = ("is-live=true", "v4l2src", "rtspsrc", "nvarguscamerasrc", "udpsrc", "tcpclientsrc",
                     "souphttpsrc", "srtsrc", "shmsrc")


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    location: str  # sensor id, device path, URL, file path, pattern, or pipeline text

    @property
    def is_live(self) -> bool:
        """Live sources are reconnected when they end; the others (files) just end."""
        if self.kind == "gst":
            return any(marker in self.location for marker in _LIVE_GST_MARKERS)
        return self.kind in ("csi", "v4l2", "rtsp", "test", "replay")


def parse_uri(text: Union[str, int]) -> SourceSpec:
    text = str(text).strip()
    if not text:
        raise SourceError("empty source: pass a file, a camera index or a URI such as rtsp://host/stream")
    if text.isdigit():
        return SourceSpec("v4l2", f"/dev/video{text}")
    if text.startswith("gst:"):
        return SourceSpec("gst", text[4:].strip())
    scheme, sep, rest = text.partition("://")
    if not sep:
        return SourceSpec("file", text)
    scheme = scheme.lower()
    if scheme == "csi":
        if rest and not rest.isdigit():
            raise SourceError(f"{text}: a CSI source is csi://<sensor id>, e.g. csi://0")
        return SourceSpec("csi", rest or "0")
    if scheme == "v4l2":
        return SourceSpec("v4l2", rest if rest.startswith("/") else f"/dev/{rest}")
    if scheme in ("rtsp", "rtsps"):
        return SourceSpec("rtsp", text)
    if scheme == "file":
        return SourceSpec("file", rest)
    if scheme == "test":
        return SourceSpec("test", rest or "smpte")
    if scheme == "replay":
        return SourceSpec("replay", rest)
    raise SourceError(f"unknown source scheme '{scheme}://': use csi, v4l2, rtsp, file, replay, test or gst:")


def _gst_quote(value: str) -> str:
    """Quote a property value for gst-launch syntax."""
    return shlex.quote(value)


def usb_camera_caps(width: int, height: int, fps: int) -> str:
    """What to ask a USB camera for, in order: the configured size and rate raw, then as MJPEG
    (most cameras give their larger modes only so), then any mode it has. Without caps v4l2src
    takes the camera's first mode and capture.fps is ignored; with only the exact mode, a camera
    without it would not start at all."""
    exact = f"width={width},height={height},framerate={fps}/1"
    return f'capsfilter caps="video/x-raw,{exact};image/jpeg,{exact};video/x-raw;image/jpeg"'


def build_pipeline(spec: SourceSpec, width: int, height: int, fps: int, jetson: bool) -> str:
    """The gst-launch description from source to BGR width x height (no sink)."""
    raw = f"video/x-raw,format=BGR,width={width},height={height}"
    # No videorate on cameras: RTSP streams often have no fixed rate (videorate then fails to
    # negotiate or aborts). The reader keeps only the newest frame and the daemon thins to
    # output.process_fps, which bounds the work the same way.
    if jetson:
        # Scale and convert on the VIC in NVMM memory; only the last BGRx->BGR step is on the CPU.
        to_bgr = (f"nvvidconv ! video/x-raw,format=BGRx,width={width},height={height} ! "
                  f"videoconvert ! {raw}")
    else:
        to_bgr = f"videoconvert ! videoscale ! {raw}"
    if spec.kind == "csi":
        if not jetson:
            raise SourceError("csi:// cameras need a Jetson (nvarguscamerasrc); use v4l2:// for USB cameras")
        return (f"nvarguscamerasrc sensor-id={int(spec.location)} ! "
                f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1 ! {to_bgr}")
    if spec.kind == "v4l2":
        caps = usb_camera_caps(width, height, fps)
        return f"v4l2src device={_gst_quote(spec.location)} ! {caps} ! decodebin ! {to_bgr}"
    if spec.kind == "rtsp":
        # decodebin picks the depayloader and decoder for what the camera sends (H.264 or H.265):
        # nvv4l2decoder on a Jetson (NVMM memory, then nvvidconv), libav's elsewhere.
        return (f"rtspsrc location={_gst_quote(spec.location)} latency=200 protocols=tcp drop-on-latency=true ! "
                f"decodebin ! {to_bgr}")
    if spec.kind == "file":
        path = Path(spec.location).expanduser()
        if not path.is_file():
            raise SourceError(f"video file {path} not found: check the path")
        if jetson:
            return (f"filesrc location={_gst_quote(str(path))} ! qtdemux ! h264parse ! nvv4l2decoder ! {to_bgr}")
        return f"filesrc location={_gst_quote(str(path))} ! decodebin ! {to_bgr}"
    if spec.kind == "replay":
        # A file played at its own pace as if it were a camera: live (the newest frame only, the
        # rest dropped and counted), started again when it ends. For benches and demos.
        path = Path(spec.location).expanduser()
        if not path.is_file():
            raise SourceError(f"video file {path} not found: check the path")
        return (f"filesrc location={_gst_quote(str(path))} ! decodebin ! videorate ! "
                f"video/x-raw,framerate={fps}/1 ! identity sync=true ! {to_bgr}")
    if spec.kind == "test":
        pattern = _gst_quote(spec.location)
        return f"videotestsrc is-live=true pattern={pattern} ! video/x-raw,framerate={fps}/1 ! {to_bgr}"
    if spec.kind == "gst":
        return f"{spec.location} ! videoconvert ! videoscale ! {raw}"
    raise SourceError(f"unknown source kind {spec.kind}")  # pragma: no cover


L4T_RELEASE_FILE = Path("/etc/nv_tegra_release")  # there on every Jetson (Linux for Tegra)
_CREDENTIALS = re.compile(r"://[^/@\s]*@")


def hide_credentials(text: Union[str, int]) -> str:
    """A source (a camera index too), pipeline or error message with every user:password@ in a URL
    shown as ***@: for logs, errors and thread names."""
    return _CREDENTIALS.sub("://***@", str(text))


# OpenCV's sample clip of people walking (Debian's opencv-doc): the default of bench and of
# the build's parity check when no frames are given.
SAMPLE_VIDEO = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def on_jetson() -> bool:
    return L4T_RELEASE_FILE.exists()

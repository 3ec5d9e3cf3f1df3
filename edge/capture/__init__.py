"""Video sources, one noun per kind: OpenCvSource (plain files, and cameras where GStreamer is
missing) and GstSource (cameras and streams through a GStreamer pipeline and a frame reader).
open_source() picks one; uri.py turns a source string into a SourceSpec and its pipeline."""


import logging
from typing import Optional, Union

from edge.capture.gst_readers import ReaderUnavailableError, pick_reader
from edge.capture.gst_source import GstSource, StatusCallback
from edge.capture.opencv_source import OpenCvSource, parse_source
from edge.capture.uri import parse_uri
from edge.config import CaptureConfig
from edge.errors import SourceError

logger = logging.getLogger(__name__)

Source = Union[OpenCvSource, GstSource]


def open_source(text: str, capture: CaptureConfig, name: str = "cam0", pad_end_s: float = 0.0,
                realtime: bool = False, on_status: Optional[StatusCallback] = None) -> Source:
    """The reader for a source string, per capture.reader (auto: plain paths with OpenCV, the rest
    with the best GStreamer reader this machine has: appsink, then opencv-gst, then gst-launch)."""
    spec = parse_uri(text)
    plain_path = spec.kind == "file" and "://" not in text
    use_gst = capture.reader != "opencv" and not (capture.reader == "auto" and plain_path)
    gst_reader = "auto" if capture.reader in ("auto", "gst") else capture.reader
    if use_gst:
        try:
            gst_reader = pick_reader(gst_reader)
        except ReaderUnavailableError as exc:
            if capture.reader != "auto" or spec.kind in ("csi", "test", "gst"):
                raise SourceError(f"{text} needs GStreamer: {exc}") from None
            logger.warning("no GStreamer reader (%s): reading %s with OpenCV (no reconnects)", exc, name)
            use_gst = False
    if not use_gst:
        location = spec.location if spec.kind == "file" else parse_source(text)
        if spec.kind == "v4l2" and text.startswith("v4l2://"):
            location = spec.location
        return OpenCvSource(location, pad_end_s=pad_end_s, realtime=realtime)
    return GstSource(spec, capture.width, capture.height, capture.fps, stall_timeout_s=capture.stall_timeout_s,
                     reconnect_min_s=capture.reconnect_min_s, reconnect_max_s=capture.reconnect_max_s,
                     on_status=on_status, name=name, reader=gst_reader)


__all__ = ["GstSource", "Source", "OpenCvSource", "open_source", "parse_uri"]

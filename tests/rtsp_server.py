"""A small RTSP server for the capture tests (GstRtspServer through PyGObject).

Run with a Python that has gi and gir1.2-gst-rtsp-server-1.0 (Debian's /usr/bin/python3):
    rtsp_server.py PORT [h264|h265] [FPS]
Serves rtsp://127.0.0.1:PORT/test: an H.264 (or H.265) test pattern at FPS (15), until killed.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
codec = sys.argv[2] if len(sys.argv) > 2 else "h264"
encode = {"h264": "openh264enc ! h264parse ! rtph264pay",
          "h265": "x265enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! h265parse ! rtph265pay"}[codec]
fps = int(sys.argv[3]) if len(sys.argv) > 3 else 15
factory.set_launch("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,"
                   f"framerate={fps}/1 "
                   f"! {encode} name=pay0 pt=96 config-interval=1 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/test", factory)
server.attach(None)
print("ready", flush=True)
GLib.MainLoop().run()

"""The device's own page (`fall-edge run --http 127.0.0.1:8081`): a live MJPEG view per camera
with skeletons, boxes, track ids and fall states drawn, the health report as JSON, and
/metrics for Prometheus. The standard library's server (threads), so it runs on Python 3.6.

It shows people: it listens on 127.0.0.1 unless told otherwise (reach it over an SSH tunnel),
and it only reads; no request changes what the device does (the zone editor, `/zones`, checks
zones and hands back YAML; zone_editor.py)."""


import html
import ipaddress
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Tuple
from urllib.parse import unquote

import cv2

from edge.config.rules import LOOPBACK_NAMES, is_loopback, parse_listen
from edge.errors import ConfigError
from edge.web.board import LiveBoard
from edge.web.metrics import CONTENT_TYPE_LATEST, metrics_text
from edge.web.zone_editor import MAX_REQUEST_BYTES, check_zones, configured, editor_page

logger = logging.getLogger(__name__)

_BOUNDARY = "fall-edge-frame"
_IDLE_WAIT_S = 5.0  # a stream with no new frame for this long checks that its viewer is still there
_JPEG_QUALITY = 75


def _host_name(header: str) -> str:
    """The name in a Host header, without its port and brackets, lower case."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def host_allowed(header: str) -> bool:
    """A Host header this page answers: an IP address, localhost, or this machine's own name.
    Any other name is DNS rebinding (a page the installer opened pointing its own name at
    127.0.0.1 while the SSH tunnel is up) and is refused: it would show the camera to that page."""
    name = _host_name(header)
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    own = socket.gethostname().lower()
    return name in LOOPBACK_NAMES or name in (own, own + ".local", socket.getfqdn().lower())


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True  # a viewer never holds the daemon up at stop
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], board: LiveBoard) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.board = board
        super().__init__(address, _Handler)


class DevicePage:
    """The server on its own thread; stop() closes it."""

    def __init__(self, board: LiveBoard, listen: str) -> None:
        host, port = parse_listen(listen)
        try:
            self._server = _Server((host, port), board)
        except OSError as exc:
            raise ConfigError(f"--http {listen}: cannot listen there ({exc.strerror or exc}): pick a free port "
                              f"or an address of this machine") from None
        self.board = board
        self.address = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever, name="device-page", daemon=True)

    def start(self) -> "DevicePage":
        self._thread.start()
        logger.info("device page on http://%s:%d/ (live view, /health, /metrics)", *self.address)
        if not is_loopback(str(self.address[0])):
            logger.warning("device page: listening on %s, beyond this machine, and it has no login: anyone who can "
                           "reach it sees the cameras; keep it on 127.0.0.1 and use an SSH tunnel (README \"The "
                           "device's page\")", self.address[0])
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one response per connection: the MJPEG stream ends with it

    def _host_refused(self) -> bool:
        if host_allowed(self.headers.get("Host", "")):
            return False
        self._send(421, "text/plain", b"this page answers only to its IP address or localhost (Host refused)\n")
        return True

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        if self._host_refused():
            return
        path = self.path.split("?", 1)[0]
        board = self.server.board
        if path == "/":
            self._send(200, "text/html; charset=utf-8", _index(board).encode("utf-8"))
        elif path in ("/health", "/metrics") and not board.health():
            # Before the first report (models loading, cameras opening) there are no figures: a
            # scraper must read "not yet", not an empty page that says "no metrics".
            self._send(503, "application/json", b'{"state": "starting"}\n')
        elif path == "/health":
            self._send(200, "application/json", json.dumps(board.health(), indent=2).encode("utf-8"))
        elif path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, metrics_text(board.health))
        elif path == "/zones":
            self._send(200, "text/html; charset=utf-8", editor_page(board.cameras).encode("utf-8"))
        elif path == "/zones.json":
            zones = {camera: configured(board.zones.get(camera, ())) for camera in board.cameras}
            self._send(200, "application/json", json.dumps(zones).encode("utf-8"))
        elif path.startswith("/stream/") and path.endswith(".mjpg"):
            camera = unquote(path[len("/stream/"):-len(".mjpg")])
            if camera not in board.cameras:
                self._send(404, "text/plain", f"no camera {camera!r} on this device\n".encode())
            else:
                self._stream(board, camera)
        else:
            self._send(404, "text/plain", b"not found: / , /health, /metrics, /zones, /stream/<camera>.mjpg\n")

    def do_POST(self) -> None:  # noqa: N802 - the standard library's name
        if self._host_refused():
            return
        if self.path.split("?", 1)[0] != "/zones/check":
            self._send(404, "text/plain", b"not found: POST /zones/check only\n")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._send(411, "text/plain", b"Content-Length required\n")
            return
        if not 0 <= length <= MAX_REQUEST_BYTES:
            self._send(413, "text/plain", f"at most {MAX_REQUEST_BYTES} bytes\n".encode())
            return
        status, answer = check_zones(self.rfile.read(length))
        self._send(status, "application/json", json.dumps(answer).encode("utf-8"))

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, board: LiveBoard, camera: str) -> None:
        with board.watching(camera) as allowed:
            if not allowed:
                self._send(503, "text/plain", b"too many live viewers on this device; close one and retry\n")
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            sequence, data = 0, b""
            try:
                while True:
                    latest = board.next_frame(camera, sequence, _IDLE_WAIT_S)
                    if latest is not None:
                        sequence, canvas = latest
                        ok, jpeg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
                        data = jpeg.tobytes() if ok else data
                    if not data:
                        continue
                    # No new frame (camera offline): the last one again, which also finds a viewer
                    # that left, so the frame loop stops drawing for nobody.
                    self.wfile.write(f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}"
                                     f"\r\n\r\n".encode("ascii") + data + b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the viewer left

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the standard library's name
        logger.debug("device page: " + format, *args)


def _index(board: LiveBoard) -> str:
    views = "\n".join(
        f'<figure><img src="/stream/{html.escape(camera)}.mjpg" alt="live view of {html.escape(camera)}">'
        f"<figcaption>{html.escape(camera)}</figcaption></figure>" for camera in board.cameras)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fall-edge: live view</title>
<style>body{{font-family:sans-serif;margin:1em;background:#111;color:#eee}}figure{{display:inline-block;margin:.5em}}
img{{max-width:100%;border:1px solid #444}}pre{{background:#222;padding:.5em;max-height:40vh;overflow:auto}}
a{{color:#8cf}}</style></head>
<body><h1>fall-edge live view</h1>
<p><a href="/zones">Draw zones</a> (beds, danger areas, watched areas)</p>
{views}
<h2>Health</h2><pre id="health">loading ...</pre>
<p><a href="/health">/health</a> (JSON) · <a href="/metrics">/metrics</a> (Prometheus)</p>
<script>
async function refresh() {{
  try {{ document.getElementById("health").textContent = await (await fetch("/health")).text(); }}
  catch (e) {{ document.getElementById("health").textContent = "device not reachable"; }}
}}
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""

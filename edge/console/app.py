"""The console's web app: login, the live dashboard, the history, the two commands.

Security: every page, picture and stream needs a logged-in operator (a session cookie after
the login form, or the reverse proxy's header when console.auth_header is set); commands are
POSTs with the session's CSRF token; the cookie is HttpOnly and SameSite=Strict. The console
listens on 127.0.0.1 unless told otherwise (README: behind TLS)."""


import hmac
import ipaddress
import json
import logging
import queue
import secrets
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Set, Tuple
from urllib.parse import urlencode

from flask import Flask, Response, abort, jsonify, redirect, render_template, request, session, url_for
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.security import check_password_hash

from edge.config import ConsoleConfig
from edge.console.log import PAGE_SIZE, EventLog, parse_time, shown_time
from edge.console.resolutions import clean_reason, record_resolution
from edge.console.sessions import Sessions
from edge.console.throttle import LOCKOUT_S, LoginThrottle
from edge.errors import FallEdgeError
from edge.mqtt.monitor import Monitor
from edge.mqtt.schema import CLIP_CODECS
from edge.private import open_private, private_file
from edge.types import EventType

logger = logging.getLogger(__name__)

_KEEPALIVE_S = 15.0  # an idle live stream sends a comment this often (proxies close silent ones)
_POLL_S = 10.0  # a page refused a live stream refreshes this often (dashboard.js)
_WRONG_PASSWORD_DELAY_S = 0.5
_LOCKOUT_S = LOCKOUT_S
_PUBLIC = ("login", "static", "health", "metrics")
SERVER_THREADS = 24  # waitress's threads
MAX_LIVE_PAGES = 16  # pages with a live stream: each holds a thread; the other 8 serve everything else
QUIET_REFRESH_S = 5.0
_QUIET_KINDS = frozenset({"health", "status", "camera_status"})


class Hub:
    """Tells every open page that something changed (server-sent events); a slow page drops
    updates rather than holding the MQTT thread.

    Each live page holds one of the server's threads: at most max_pages are live, the rest
    refresh on a timer (16 live pages took every thread and froze the console). Health and status
    reports, which 200 devices send several times a second, refresh the pages at most every
    quiet_refresh_s (each refresh re-renders the dashboard on every page); events, at once."""

    def __init__(self, max_pages: int = MAX_LIVE_PAGES, quiet_refresh_s: float = QUIET_REFRESH_S) -> None:
        self.max_pages, self.quiet_refresh_s = max_pages, quiet_refresh_s
        self._pages: Set["queue.Queue[str]"] = set()
        self._lock = threading.Lock()
        self._quiet_sent = float("-inf")  # when a health or status refresh last went out
        self._quiet_timer: Optional[threading.Timer] = None

    def publish(self, kind: str) -> None:
        if kind in _QUIET_KINDS:
            with self._lock:
                if self._quiet_timer is not None:
                    return  # a refresh is already coming: it shows this report too
                wait_s = self._quiet_sent + self.quiet_refresh_s - time.monotonic()
                if wait_s > 0:
                    self._quiet_timer = threading.Timer(wait_s, self._quiet_due, (kind,))
                    self._quiet_timer.daemon = True
                    self._quiet_timer.start()
                    return
                self._quiet_sent = time.monotonic()
        self._send(kind)

    def _quiet_due(self, kind: str) -> None:
        with self._lock:
            self._quiet_timer = None
            self._quiet_sent = time.monotonic()
        self._send(kind)

    def _send(self, kind: str) -> None:
        with self._lock:
            pages = list(self._pages)
        for page in pages:
            try:
                page.put_nowait(kind)
            except queue.Full:
                pass

    def listen(self) -> Optional["queue.Queue[str]"]:
        """A new live page's queue, or None when max_pages are live already."""
        page: "queue.Queue[str]" = queue.Queue(maxsize=100)
        with self._lock:
            if len(self._pages) >= self.max_pages:
                return None
            self._pages.add(page)
        return page

    def leave(self, page: "queue.Queue[str]") -> None:
        with self._lock:
            self._pages.discard(page)

    def close(self) -> None:
        with self._lock:
            if self._quiet_timer is not None:
                self._quiet_timer.cancel()
                self._quiet_timer = None


class _ConsoleCollector:
    """One /metrics scrape: whether the broker is connected, and the counts of /health."""

    _COUNTERS = (("messages_skipped", "kind", "Messages from devices refused, by topic kind"),
                 ("messages_failed", "kind", "Messages from devices whose handler failed, by topic kind"),
                 ("pages_failed", "page", "Console pages that could not be served, by page"))

    def __init__(self, connected: Callable[[], bool], counts: Callable[[], Dict[str, Dict[str, int]]]) -> None:
        self.connected, self.counts = connected, counts

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("fall_edge_console_broker_connected", "1 while the console is connected to the "
                                                                      "broker", value=float(self.connected()))
        counts = self.counts()
        for name, label, text in self._COUNTERS:
            family = CounterMetricFamily(f"fall_edge_console_{name}", text, labels=[label])
            for key, value in sorted(counts[name].items()):
                family.add_metric([key], float(value))
            yield family


def session_secret(db_path: Path) -> bytes:
    """The key that signs session cookies, kept owner-only beside the log, so logins survive a
    restart of the console."""
    path = db_path.with_name(db_path.name + ".secret")
    if not path.is_file() or path.stat().st_size < 32:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open_private(path, "wb") as handle:
            handle.write(secrets.token_bytes(32))
    private_file(path)
    return path.read_bytes()


def create_app(console: ConsoleConfig, log: EventLog, monitor: Monitor, hub: Hub, secret: bytes) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secret, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
                      SESSION_COOKIE_SECURE=console.secure_cookie, SESSION_COOKIE_NAME="fall_edge_console",
                      PERMANENT_SESSION_LIFETIME=timedelta(hours=console.session_hours))
    hashes = {operator.name: operator.password_hash for operator in console.operators}
    throttle = LoginThrottle(lockout_s=_LOCKOUT_S)
    trusted = set(console.trusted_proxies)
    warned_proxy: Set[str] = set()

    def client_address() -> str:
        """Who is asking: the last X-Forwarded-For entry when the request came through a trusted
        proxy (what the proxy itself saw), else the connection's address."""
        remote = request.remote_addr or ""
        forwarded = request.headers.get("X-Forwarded-For", "")
        if remote in trusted and forwarded:
            last = forwarded.split(",")[-1].strip()
            try:
                return str(ipaddress.ip_address(last))
            except ValueError:
                return remote
        if forwarded and not trusted and remote not in warned_proxy:
            warned_proxy.add(remote)
            logger.warning("console: requests come through a proxy at %s but console.trusted_proxies is empty: the "
                           "login lockout cannot tell the people behind it apart; set trusted_proxies: [%s]",
                           remote, remote)
        return remote
    pending: Dict[str, Tuple[str, float]] = {}  # event id -> (operator, when the ack was sent)

    logins = Sessions(log.path, console.session_hours * 3600.0)

    def operator() -> Optional[str]:
        if console.auth_header:
            name = request.headers.get(console.auth_header, "").strip()
            return name[:64] or None
        # The cookie names the operator only while the server still has its session (not after
        # logout, not past session_hours).
        name = session.get("operator")
        return name if name is not None and logins.operator(session.get("sid")) == name else None

    @app.before_request
    def require_login():
        if request.endpoint in _PUBLIC:
            return None
        if operator() is None:
            if request.path.startswith(("/api/", "/stream", "/snapshot/", "/clip/", "/fragment/")):
                return jsonify(error="log in first"), 401
            return redirect(url_for("login"))
        session.setdefault("csrf", secrets.token_urlsafe(24))
        token = request.headers.get("X-CSRF-Token") or request.form.get("csrf", "")
        # compare_digest refuses non-ASCII text with a TypeError: compare the bytes
        if request.method == "POST" and not hmac.compare_digest(token.encode("utf-8", "surrogatepass"),
                                                                 session["csrf"].encode("ascii")):
            return jsonify(error="missing or wrong CSRF token: reload the page"), 403
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; "
            "script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
        return response

    def login_page(error: Optional[str]) -> str:
        return render_template("login.html", error=error, operator=None, csrf=None)

    @app.route("/login", methods=["GET", "POST"])
    def login():
        if console.auth_header:
            return redirect(url_for("dashboard"))
        if request.method == "GET":
            return login_page(None)
        name = request.form.get("name", "")
        password = request.form.get("password", "")
        # Counted per name and address: a stranger elsewhere cannot lock an operator out of their
        # own desk, and each lock starts a fresh window when it ends (it once held only once).
        address = client_address()
        key = (name, address)
        if not throttle.begin(key):  # before the hash: concurrent guesses each take a place
            return login_page("too many wrong passwords: wait 5 minutes"), 429
        stored = hashes.get(name)
        if stored is None or not check_password_hash(stored, password):
            # An unknown name is not logged: it may be a password typed into the wrong box.
            logger.warning("console: wrong password for %s from %s", name if stored else "an unknown name",
                           address)
            time.sleep(_WRONG_PASSWORD_DELAY_S)  # slows guessing
            return login_page("wrong name or password"), 401
        throttle.succeeded(key)
        session.clear()
        session.permanent = True
        session["operator"] = name
        session["sid"] = logins.begin(name)
        session["csrf"] = secrets.token_urlsafe(24)
        logger.info("console: %s logged in from %s", name, address)
        return redirect(url_for("dashboard"))

    @app.route("/logout", methods=["POST"])
    def logout():
        logins.end(session.get("sid"))
        session.clear()
        return redirect(url_for("login"))

    render_failures: Dict[str, int] = {}  # endpoint -> pages that failed to render
    logged_failures: Set[Tuple[str, str]] = set()

    @app.errorhandler(Exception)
    def failed(exc: Exception):
        """A page that cannot be rendered (a stored row no check foresaw) fails alone: counted
        per page, logged once per page and error, and the console goes on serving the others."""
        from werkzeug.exceptions import HTTPException

        if isinstance(exc, HTTPException):
            return exc
        endpoint = request.endpoint or "other"
        render_failures[endpoint] = render_failures.get(endpoint, 0) + 1
        key = (endpoint, type(exc).__name__)
        if key not in logged_failures and len(logged_failures) < 1000:
            logged_failures.add(key)
            logger.error("console: %s could not be served (%s: %s); counted in /health and /metrics",
                         request.path, type(exc).__name__, exc, exc_info=True)
        return jsonify(error="this page could not be shown; the console's log says why"), 500

    def counters() -> Dict[str, Dict[str, int]]:
        return {"messages_skipped": dict(monitor.skipped_by_kind), "messages_failed": dict(monitor.failed_by_kind),
                "pages_failed": dict(render_failures)}

    @app.route("/health")
    def health():
        return jsonify(broker_connected=monitor.connected.is_set(), broker_error=monitor.error, **counters())

    metrics_registry = CollectorRegistry(auto_describe=False)
    metrics_registry.register(_ConsoleCollector(monitor.connected.is_set, counters))  # type: ignore[arg-type]

    @app.route("/metrics")
    def metrics():
        """Prometheus text (prometheus_client, as the device's page): the same counts as /health."""
        return Response(generate_latest(metrics_registry), mimetype=CONTENT_TYPE_LATEST)

    @app.template_filter("urlencode_page")
    def urlencode_page(args, page: int) -> str:
        return urlencode({**args.to_dict(), "page": page})

    def dashboard_context() -> dict:
        alarms = log.alarms()
        sent_acks = dict(pending)  # waitress serves pages on several threads: a copy to read
        for event_id, (_, sent) in sent_acks.items():
            if time.time() - sent > 3600:
                pending.pop(event_id, None)  # the device never answered: the button comes back
        unacknowledged = [a for a in alarms if a.is_open and a.event_id not in sent_acks]
        devices = log.devices()
        return {"devices": devices, "alarms": alarms, "pending": sent_acks, "shown_time": shown_time,
                "away": {d.name for d in devices if not d.online},
                "parse_time": parse_time, "unacknowledged": len(unacknowledged), "now": time.time(),
                "broker_connected": monitor.connected.is_set(), "broker_error": monitor.error}

    @app.route("/")
    def dashboard():
        return render_template("dashboard.html", operator=operator(), csrf=session["csrf"], **dashboard_context())

    @app.route("/fragment/dashboard")
    def dashboard_fragment():
        return render_template("_dashboard.html", **dashboard_context())

    @app.route("/history")
    def history():
        args = request.args
        pages_stored = max(1, -(-log.count() // PAGE_SIZE))
        # A page beyond the last shows the last: a 20-digit page number once overflowed SQLite's OFFSET.
        page = min(max(1, args.get("page", 1, type=int) or 1), pages_stored)
        since = parse_time(args.get("since", "") + "T00:00:00Z")
        until = parse_time(args.get("until", "") + "T00:00:00Z")
        until = until + 86400 if until is not None else None  # the whole last day
        kind = args.get("type", "")
        if kind and kind not in {k.value for k in EventType}:
            kind = ""
        events, total = log.history(args.get("device", ""), args.get("camera", ""), kind, since, until, page)
        devices, cameras = log.names()
        pages = max(1, -(-total // PAGE_SIZE))
        return render_template("history.html", operator=operator(), csrf=session["csrf"], events=events,
                               total=total, page=page, pages=pages, args=args, devices=devices, cameras=cameras,
                               types=[k.value for k in EventType], shown_time=shown_time)

    @app.route("/snapshot/<event_id>.jpg")
    def snapshot(event_id: str):
        jpeg = log.snapshot(event_id)
        if jpeg is None:
            abort(404)
        return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.route("/clip/<event_id>")
    def clip(event_id: str):
        """An event's clip; ranges served, so the browser's player can seek."""
        found = log.clip(event_id)
        if found is None:
            abort(404)
        video, codec = found
        response = Response(video, mimetype=CLIP_CODECS.get(codec, "application/octet-stream"),
                            headers={"Cache-Control": "private, max-age=3600"})
        return response.make_conditional(request, accept_ranges=True, complete_length=len(video))

    @app.route("/api/ack", methods=["POST"])
    def ack():
        event_id = str((request.get_json(silent=True) or {}).get("event_id", ""))
        name = operator() or ""
        try:
            device = monitor.ack(event_id, operator=name, timeout_s=5.0)
        except FallEdgeError as exc:
            return jsonify(error=str(exc)), 502
        pending[event_id] = (name, time.time())
        logger.info("console: %s acknowledged %s on %s", name, event_id, device)
        hub.publish("ack")
        return jsonify(sent=True, device=device), 202

    @app.route("/api/resolve", methods=["POST"])
    def resolve():
        """Close an open alarm here, with a reason: its device went away and cannot acknowledge."""
        body = request.get_json(silent=True) or {}
        event_id, reason = str(body.get("event_id", "")), clean_reason(body.get("reason"))
        if not reason:
            return jsonify(error="say why (e.g. seen on site, the device is switched off)"), 400
        target = next((a for a in log.alarms() if a.event_id == event_id), None)
        if target is None or not target.is_open:
            return jsonify(error="no open alarm with that event id"), 404
        name = operator() or ""
        resolution = record_resolution(log.path, target.device, target.camera, target.event.get("track_id"),
                                       event_id, name, reason)
        pending.pop(event_id, None)
        try:  # a device that is back stops its own alarm too
            monitor.ack(event_id, operator=name, timeout_s=2.0)
        except FallEdgeError as exc:
            logger.info("console: the acknowledgement of %s could not be sent to %s (%s)", event_id, target.device,
                        exc)
        logger.warning("console: %s resolved %s of %s in the console: %s", name, event_id, target.device, reason)
        hub.publish("resolve")
        return jsonify(resolved=True, event_id=resolution["event_id"]), 200

    @app.route("/api/test", methods=["POST"])
    def test_alarm():
        device = str((request.get_json(silent=True) or {}).get("device", ""))
        if device not in {d.name for d in log.devices()}:
            return jsonify(error=f"no device {device!r} in the log"), 404
        try:
            monitor.command(device, "test", operator=operator() or "", timeout_s=5.0)
        except FallEdgeError as exc:
            return jsonify(error=str(exc)), 502
        logger.info("console: %s sent a test alarm to %s", operator(), device)
        return jsonify(sent=True, device=device), 202

    @app.route("/stream")
    def stream():
        page = hub.listen()
        if page is None:
            return jsonify(error=f"{hub.max_pages} pages are live already: this one refreshes every "
                                 f"{int(_POLL_S)} s"), 503

        def events() -> Iterator[str]:
            yield "retry: 2000\n\n"
            while True:
                try:
                    kind = page.get(timeout=_KEEPALIVE_S)
                except queue.Empty:
                    yield ": still here\n\n"
                    continue
                yield f"data: {json.dumps({'kind': kind})}\n\n"

        response = Response(events(), mimetype="text/event-stream", headers={"X-Accel-Buffering": "no"})
        # On close, not in the generator's finally: a page gone before its stream began never
        # ran the generator, and would have kept its place among the live pages for good.
        response.call_on_close(lambda: hub.leave(page))
        return response

    return app

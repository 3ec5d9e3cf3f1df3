"""The control-room side: subscribe to every device, keep a local log, de-duplicate by event_id,
show devices and open alarms, acknowledge, forward alarms to a webhook.

The monitor uses a persistent MQTT session (clean_session false, a fixed client id) so the
broker keeps QoS 1 events for it while it is away.
"""


import json
import logging
import queue
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

import tenacity

from edge.config import MqttConfig
from edge.errors import FallEdgeError
from edge.mqtt import topics
from edge.mqtt.commands import read_command_key, sign_command
from edge.mqtt.connection import (
    describe_disconnect,
    describe_refusal,
    make_client,
    set_callbacks,
    watch_connect_errors,
)
from edge.mqtt.schema import (
    MAX_EVENT_BYTES,
    event_problem,
    health_problem,
    parse_clip,
    parse_status,
    snapshot_event_id,
)
from edge.private import private_file
from edge.types import AcknowledgedChains, EventType

logger = logging.getLogger(__name__)

ChainKey = Tuple[str, str, int]  # device, camera, track id
_WEBHOOK_TRIES = 3
_SKIP_LOG_KEYS = 1000  # (topic, reason) pairs remembered so that each is logged once
_MAX_REPORT_BYTES = 65536
# A device's snapshot is one JPEG of a frame (50-400 KB at 1080p); more is not a snapshot.
MAX_SNAPSHOT_BYTES = 2 * 1024 * 1024
# All devices' snapshots together: over this, the device storing the most loses its oldest first,
# so a device flooding pictures (or one inventing device names) cannot push out another's.
SNAPSHOT_STORE_BYTES = 1024 ** 3
CLIP_STORE_BYTES = 4 * 1024 ** 3  # all devices' clips together, trimmed the same way


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number")


@dataclass
class OpenAlarm:
    event_id: str
    device: str
    camera: str
    track_id: int
    type: str
    ts: str


class Webhook:
    """POST each alarm as JSON to a URL (an SMS or pager gateway), on its own thread."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        self._queue: queue.Queue = queue.Queue()  # payloads; None stops the worker
        self.delivered = 0
        self.failed = 0  # alarms given up on after _WEBHOOK_TRIES
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def post(self, payload: dict) -> None:
        self._queue.put(payload)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=self.timeout_s * _WEBHOOK_TRIES)

    def _post_once(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # HTTP errors raise too
            response.read()

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        logger.warning("webhook %s failed (%s), try %d of %d", self.url, state.outcome.exception(),
                       state.attempt_number, _WEBHOOK_TRIES)

    def _run(self) -> None:
        send = tenacity.Retrying(stop=tenacity.stop_after_attempt(_WEBHOOK_TRIES),
                                 wait=tenacity.wait_exponential(multiplier=0.5, max=4.0),
                                 retry=tenacity.retry_if_exception_type((urllib.error.URLError, OSError)),
                                 before_sleep=self._log_retry, reraise=True)
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            try:
                send(self._post_once, json.dumps(payload).encode("utf-8"))
                self.delivered += 1
            except (urllib.error.URLError, OSError) as exc:
                self.failed += 1
                logger.error("webhook %s: alarm %s not delivered after %d tries (%s); it stays in the monitor's log",
                             self.url, payload.get("event_id"), _WEBHOOK_TRIES, exc)


class Monitor:
    def __init__(self, config: MqttConfig, db_path: Path, client_id: str = "fall-edge-monitor",
                 on_event: Optional[Callable[[dict, bool], None]] = None, webhook: Optional[Webhook] = None,
                 operator: str = "", everything: bool = False, snapshot_keep: int = 1000,
                 snapshot_max_age_s: float = 30 * 86400.0) -> None:
        """everything: also keep health reports, camera status and snapshots (the web console);
        snapshots show people, so at most snapshot_keep are kept, none older than snapshot_max_age_s."""
        self.config = config
        self.operator = operator or config.username  # who acknowledges, in signed commands
        self.prefix = config.prefix
        self.on_event = on_event
        self.webhook = webhook
        db_path.parent.mkdir(parents=True, exist_ok=True)
        private_file(db_path)  # the log holds every event's boxes and keypoints
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS events (event_id TEXT PRIMARY KEY, device TEXT, camera TEXT, "
                         "type TEXT, seq INTEGER, ts TEXT, payload TEXT, received_at REAL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS devices (device TEXT PRIMARY KEY, status TEXT, since REAL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS events_by_time ON events (received_at)")
        self.everything = everything
        self.snapshot_keep, self.snapshot_max_age_s = snapshot_keep, snapshot_max_age_s
        if everything:
            self._db.execute("CREATE TABLE IF NOT EXISTS cameras (device TEXT, camera TEXT, status TEXT, reason TEXT, "
                             "since REAL, PRIMARY KEY (device, camera))")
            self._db.execute("CREATE TABLE IF NOT EXISTS health (device TEXT PRIMARY KEY, payload TEXT, "
                             "received_at REAL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS snapshots (event_id TEXT PRIMARY KEY, device TEXT, "
                             "camera TEXT, jpeg BLOB, received_at REAL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS clips (clip_of TEXT PRIMARY KEY, device TEXT, camera TEXT, "
                             "meta TEXT, video BLOB, received_at REAL)")
        self._lock = threading.Lock()
        self.open_alarms: Dict[ChainKey, OpenAlarm] = {}
        self._acknowledged = AcknowledgedChains()  # their later alarm is not a new open alarm
        self.duplicates = 0
        self.skipped = 0  # malformed messages
        # per topic kind (events, health, status, snapshot): messages refused, and messages whose
        # handler failed (a bug or a full disk); for the console's /health and /metrics
        self.skipped_by_kind: Dict[str, int] = {}
        self.failed_by_kind: Dict[str, int] = {}
        self._skip_logged: Set[Tuple[str, str]] = set()
        self.connected = threading.Event()
        self.error: Optional[str] = None
        self._client = make_client(config, client_id, clean_session=False)
        set_callbacks(self._client, on_connect=self._on_connect, on_disconnect=self._on_disconnect,
                      on_message=self._on_message)
        self.ever_connected = False
        self._stopping = False
        self._refused = False
        watch_connect_errors(self._client, self._connection_failed, config)

    def start(self) -> None:
        self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._db.close()

    def _connection_failed(self, reason: str) -> None:
        if reason != self.error:
            logger.error("monitor: %s", reason)
        self.error = reason

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if not self._stopping and not self._refused:
            self._connection_failed(describe_disconnect(reason_code, self.config, self.ever_connected))
        self._refused = False

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = True  # the disconnect that follows says less than this
            self._connection_failed(describe_refusal(reason_code))
            return
        if self.error is not None:
            logger.warning("monitor: connected to %s:%d again", self.config.host, self.config.port)
        self.error = None
        self.ever_connected = True
        wanted = [(f"{self.prefix}/+/+/events", 1), (f"{self.prefix}/+/status", 1)]
        if self.everything:
            wanted += [(f"{self.prefix}/+/health", 1), (f"{self.prefix}/+/+/status", 1),
                       (f"{self.prefix}/+/+/snapshot", 1), (f"{self.prefix}/+/+/clip", 1)]
        client.subscribe(wanted)
        self.connected.set()

    # -- incoming ------------------------------------------------------------------------------

    def _on_message(self, client, userdata, message) -> None:
        try:
            device, camera, leaf = topics.parse_device_topic(message.topic, self.prefix)
            if device is None:
                return
            if leaf == "status" and camera is None:
                state, problems, why = parse_status(message.payload)
                if why:
                    self._skip(message.topic, why)
                    return
                shown = state if not problems else state + " (problems: " + "; ".join(
                    f"{part}: {reason}" for part, reason in sorted(problems.items())) + ")"
                self._set_status(device, shown)
            elif leaf == "events" and camera is not None:
                self._on_event(device, camera, message.topic, message.payload)
            elif self.everything and leaf == "health" and camera is None:
                self._on_health(device, message.topic, message.payload)
            elif self.everything and leaf == "status" and camera is not None:
                self._on_camera_status(device, camera, message.topic, message.payload)
            elif self.everything and leaf == "snapshot" and camera is not None:
                self._on_snapshot(device, camera, message.topic, message.payload)
            elif self.everything and leaf == "clip" and camera is not None:
                self._on_clip(device, camera, message.topic, message.payload)
        except Exception as exc:  # whatever arrives, the monitor keeps showing the others
            self._skip(message.topic, f"could not be handled ({type(exc).__name__}: {exc})", failed=True)

    def _skip(self, topic: str, reason: str, failed: bool = False) -> None:
        """Log a bad message once per topic and reason (a device repeating it logs nothing more),
        and count it under its topic's kind."""
        self.skipped += 1
        counts = self.failed_by_kind if failed else self.skipped_by_kind
        kind = topics.topic_kind(topic)
        counts[kind] = counts.get(kind, 0) + 1
        key = (topic, reason)
        if key not in self._skip_logged:
            if len(self._skip_logged) >= _SKIP_LOG_KEYS:
                self._skip_logged.clear()
            self._skip_logged.add(key)
            logger.warning("monitor: message on %s skipped: %s", topic, reason)

    def _set_status(self, device: str, status: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO devices (device, status, since) VALUES (?, ?, ?)",
                             (device, status, time.time()))
        if self.on_event is not None:
            self.on_event({"type": "status", "device": device, "status": status}, True)

    def _on_event(self, device: str, camera: str, topic: str, raw: bytes) -> None:
        if len(raw) > MAX_EVENT_BYTES:  # before parsing: every page that lists it would carry it
            self._skip(topic, f"not an event (over {MAX_EVENT_BYTES // 1024} KB)")
            return
        try:
            event = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self._skip(topic, f"not JSON ({exc})")
            return
        problem = event_problem(event, device, camera)
        if problem:
            self._skip(topic, problem)
            return
        event_id, kind = event["event_id"], event["type"]
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO events (event_id, device, camera, type, seq, ts, payload, received_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (event_id, device, camera, kind, event.get("seq"), event.get("ts"), raw.decode("utf-8"), time.time()))
            new = cursor.rowcount == 1
            if not new:
                self.duplicates += 1
            else:
                self._track_alarm(device, camera, event)
        if new and self.webhook is not None and kind == EventType.ALARM:
            self.webhook.post(event)
        if self.on_event is not None:
            self.on_event(event, new)

    def _on_health(self, device: str, topic: str, raw: bytes) -> None:
        if len(raw) > _MAX_REPORT_BYTES:  # before parsing it: a huge payload costs nothing
            self._skip(topic, "not a health report (a JSON object under 64 KB)")
            return
        try:
            report = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            self._skip(topic, f"not JSON ({exc})")
            return
        problem = health_problem(report)
        if problem:
            self._skip(topic, f"not a health report ({problem})")
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO health (device, payload, received_at) VALUES (?, ?, ?)",
                             (device, raw.decode("utf-8"), time.time()))
        if self.on_event is not None:
            self.on_event({"type": "health", "device": device}, True)

    def _on_camera_status(self, device: str, camera: str, topic: str, raw: bytes) -> None:
        try:
            data = json.loads(raw.decode("utf-8"))
            status, reason = str(data["status"])[:40], str(data.get("reason", ""))[:500]
        except (UnicodeDecodeError, ValueError, RecursionError, TypeError, KeyError):
            self._skip(topic, "not a camera status (JSON with status and reason)")
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO cameras (device, camera, status, reason, since) "
                             "VALUES (?, ?, ?, ?, ?)", (device, camera, status, reason, time.time()))
        if self.on_event is not None:
            self.on_event({"type": "camera_status", "device": device, "camera": camera, "status": status}, True)

    def _on_snapshot(self, device: str, camera: str, topic: str, raw: bytes) -> None:
        if len(raw) > MAX_SNAPSHOT_BYTES:
            self._skip(topic, f"a snapshot of {len(raw)} bytes (at most {MAX_SNAPSHOT_BYTES})")
            return
        event_id = snapshot_event_id(raw)
        if event_id is None:
            self._skip(topic, "a snapshot that names no event (from an older device?)")
            return
        now = time.time()
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO snapshots (event_id, device, camera, jpeg, received_at) "
                             "VALUES (?, ?, ?, ?, ?)", (event_id, device, camera, raw, now))
            self._bound("snapshots", "event_id", "jpeg", device, now, SNAPSHOT_STORE_BYTES)
        if self.on_event is not None:
            self.on_event({"type": "snapshot", "device": device, "camera": camera, "event_id": event_id}, True)

    def _on_clip(self, device: str, camera: str, topic: str, raw: bytes) -> None:
        clip, video, why = parse_clip(raw)
        if clip is None:
            self._skip(topic, str(why))
            return
        for name, expected in (("device", device), ("camera", camera)):
            if clip.get(name) not in (None, "", expected):
                self._skip(topic, f"{name} {clip[name]!r} differs from the topic's {expected!r}")
                return
        now = time.time()
        with self._lock:
            # The clip of an event from another device is refused: a device names only its own.
            owner = self._db.execute("SELECT device FROM events WHERE event_id = ?", (clip["clip_of"],)).fetchone()
            if owner is not None and owner[0] != device:
                self._skip(topic, "a clip of another device's event")
                return
            self._db.execute("INSERT OR IGNORE INTO clips (clip_of, device, camera, meta, video, received_at) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (clip["clip_of"], device, camera, json.dumps(clip), video,
                                                           now))
            self._bound("clips", "clip_of", "video", device, now, CLIP_STORE_BYTES)
        if self.on_event is not None:
            self.on_event({"type": "clip", "device": device, "camera": camera, "event_id": clip["clip_of"]}, True)

    def _bound(self, table: str, key: str, blob: str, device: str, now: float, limit_bytes: int) -> None:
        """Pictures and videos of people: bounded in time, in number per device (one device's flood
        pushed out every other device's), and in bytes over all devices."""
        self._db.execute(f"DELETE FROM {table} WHERE received_at < ?", (now - self.snapshot_max_age_s,))
        self._db.execute(f"DELETE FROM {table} WHERE device = ? AND {key} NOT IN (SELECT {key} FROM {table} "
                         f"WHERE device = ? ORDER BY received_at DESC LIMIT ?)", (device, device, self.snapshot_keep))
        self._trim_bytes(table, key, blob, limit_bytes)

    def _trim_bytes(self, table: str, key: str, blob: str, limit: int) -> None:
        """Under limit bytes: the oldest rows of whichever device stores the most go first."""
        while True:
            rows = self._db.execute(f"SELECT device, sum(length({blob})) AS bytes, count(*) FROM {table} "
                                    f"GROUP BY device ORDER BY bytes DESC").fetchall()
            if not rows or sum(r[1] or 0 for r in rows) <= limit:
                return
            if rows[0][2] > 1:
                self._db.execute(f"DELETE FROM {table} WHERE {key} = (SELECT {key} FROM {table} "
                                 f"WHERE device = ? ORDER BY received_at LIMIT 1)", (rows[0][0],))
            else:  # one each (many device names): the oldest of all goes
                self._db.execute(f"DELETE FROM {table} WHERE {key} = (SELECT {key} FROM {table} "
                                 f"ORDER BY received_at LIMIT 1)")

    def _track_alarm(self, device: str, camera: str, event: dict) -> None:
        key = (device, camera, event["track_id"])
        if self._acknowledged.repeat_of(event["type"], key) is not None:
            return  # the same fall's alarm after the hold: already acknowledged
        if EventType(event["type"]).opens_alarm:
            self.open_alarms[key] = OpenAlarm(event["event_id"], device, camera, key[2], event["type"],
                                              str(event.get("ts")))
        elif event["type"] in (EventType.RECOVERED, EventType.ACKNOWLEDGED):
            self.open_alarms.pop(key, None)
            if event["type"] == EventType.ACKNOWLEDGED:
                self._acknowledged.acknowledged(key)

    # -- queries and commands --------------------------------------------------------------------

    def events(self) -> List[dict]:
        with self._lock:
            rows = self._db.execute("SELECT payload FROM events ORDER BY received_at, rowid").fetchall()
        return [json.loads(row[0]) for row in rows]

    def devices(self) -> Dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT device, status FROM devices").fetchall())

    def device_of(self, event_id: str) -> Optional[str]:
        with self._lock:
            row = self._db.execute("SELECT device FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return row[0] if row else None

    def ack(self, event_id: str, device: Optional[str] = None, timeout_s: float = 10.0,
            operator: Optional[str] = None) -> str:
        device = device or self.device_of(event_id)
        if device is None:
            raise FallEdgeError(f"event {event_id} is not in the monitor's log: pass --device with its device name")
        self.command(device, "ack", event_id=event_id, operator=operator or self.operator, timeout_s=timeout_s)
        return device

    def command(self, device: str, command: str, event_id: str = "", operator: str = "",
                timeout_s: float = 10.0) -> None:
        """Publish a command the way devices accept it: signed with the site's key when one is
        configured (they refuse unsigned ones then), else the event id (or JSON with the operator)."""
        if not topics.valid_name(device):
            raise FallEdgeError(f"device {device!r} is not a device name")
        if not self.connected.wait(timeout_s):
            raise FallEdgeError(f"cannot reach the broker at {self.config.host}:{self.config.port}"
                                f"{': ' + self.error if self.error else ''}")
        topic = topics.command_topic(self.prefix, device, command)
        if self.config.command_key_file:
            payload = sign_command(read_command_key(self.config.command_key_file), topic, event_id=event_id,
                                   operator=operator)
        elif operator:
            payload = json.dumps({"event_id": event_id, "operator": operator}).encode()
        else:
            payload = event_id.encode()
        info = self._client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=timeout_s)

    def table(self) -> str:
        lines = ["devices:"]
        for device, status in sorted(self.devices().items()):
            lines.append(f"  {shown(device):<20} {shown(status)}")
        lines.append("open alarms:")
        with self._lock:
            alarms = list(self.open_alarms.values())
        for alarm in alarms:
            lines.append(shown(f"  {alarm.device}/{alarm.camera} track {alarm.track_id}: {alarm.type} at {alarm.ts} "
                               f"(ack: fall-edge monitor --ack {alarm.event_id})"))
        if not alarms:
            lines.append("  none")
        return "\n".join(lines)


def shown(text: object) -> str:
    """Text from the network as a terminal may show it: control characters (escape sequences move
    the cursor, retitle the window, write the clipboard) become visible \\x.. escapes."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"
                   for ch in str(text))


def print_event_line(event: dict, new: bool, as_json: bool) -> None:
    if not new:
        return
    if as_json:
        print(json.dumps(event), flush=True)  # ASCII only: json escapes every control character
    elif event.get("type") == "status":
        print(shown(f"{event['device']}: {event['status']}"), flush=True)
    else:
        print(shown(f"{event.get('ts')} {event.get('device')}/{event.get('camera')} {event.get('type'):<14} "
                    f"track {event.get('track_id')} conf {event.get('confidence')} id {event.get('event_id')}"),
              flush=True)
    sys.stdout.flush()

"""The device's MQTT side: status with a last will, events from the outbox, snapshots, health,
and commands from the control room. Nothing here blocks the caller on the network."""


import json
import logging
import queue
import socket
import threading
import time
import uuid
from typing import Callable, Dict, Optional, Set, Tuple

import paho.mqtt.client as mqtt

from edge.config import MqttConfig
from edge.logs import LogThrottle
from edge.mqtt import topics
from edge.mqtt.commands import CommandVerifier, read_command_key
from edge.mqtt.connection import (
    describe_disconnect,
    describe_refusal,
    device_name,
    make_client,
    set_callbacks,
    watch_connect_errors,
)
from edge.mqtt.journal import Journal, new_journal_path
from edge.mqtt.outbox import Outbox

logger = logging.getLogger(__name__)

CommandHandler = Callable[[bytes], None]
_EARLY_ACK_TTL_S = 10.0
_MAX_QUEUED = 1000  # events handed over by the frame loop, not yet written; beyond it the caller writes
_REFUSAL_LOG_S = 60.0
CLAIM_INTERVAL_S = 30.0  # how often a running device says who it is
MAX_COMMAND_BYTES = 4096  # a signed ack is about 250 bytes


def boot_id() -> str:
    """This boot of this machine (Linux's random boot id): a cloned SD card has the same host name
    and machine id as its twin, never the same boot id."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()[:64]
    except OSError:
        return ""


class MqttPublisher:
    def __init__(self, config: MqttConfig, outbox: Outbox, client_id: Optional[str] = None) -> None:
        self.config = config
        self.outbox = outbox
        self.device = device_name(config)
        if not topics.valid_name(self.device):
            raise ValueError(f"device name {self.device!r} cannot be a topic level")
        self.prefix = config.prefix
        # Who this process is. The client id carries it: two devices given one name (a cloned SD
        # card) used to take each other's session every 1.4 s forever; now both stay connected,
        # see each other's claim on the instance topic and say so (issue 40, defect 5).
        self.instance = uuid.uuid4().hex[:12]
        self.started = time.time()
        self.name_conflict: Optional[str] = None  # another running device with this name (health)
        self._conflict_seen_at = 0.0
        self._conflicts_logged: Set[str] = set()
        self._next_claim = 0.0
        self._client = make_client(config, client_id or f"fall-edge-{self.device}-{self.instance}",
                                   will_topic=topics.status_topic(self.prefix, self.device))
        self._client.max_inflight_messages_set(max(1, config.max_inflight))
        set_callbacks(self._client, on_connect=self._on_connect, on_disconnect=self._on_disconnect,
                      on_publish=self._on_publish, on_message=self._on_message)
        self._handlers: Dict[str, CommandHandler] = {}
        self._verifier: Optional[CommandVerifier] = None
        if config.command_key_file:
            self._verifier = CommandVerifier(read_command_key(config.command_key_file), config.command_max_age_s)
        else:
            logger.warning("MQTT: commands (ack, test) are not authenticated: anyone who may publish to "
                           "%s/%s/cmd/ can send them; set mqtt.command_key_file and a broker ACL "
                           "(configs/mosquitto.acl)", config.prefix, self.device)
        self._refusal_log = LogThrottle(_REFUSAL_LOG_S)  # per reason
        self.commands_refused = 0
        self.commands_failed = 0  # accepted commands whose handler raised
        self._lock = threading.Lock()
        self._in_flight: Dict[int, int] = {}  # paho mid -> outbox seq
        self._early_acks: Dict[int, float] = {}  # PUBACKs that beat us to recording their mid
        self._last_handed = 0  # highest seq given to paho in this process
        self._last_handed_memory = 0  # highest memory id given (events the outbox file could not take)
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._latest_snapshots: Dict[str, bytes] = {}
        self._retained: Dict[str, bytes] = {}  # topic -> the latest retained state (Home Assistant's)
        self._watched: Optional[Tuple[str, Callable[[str, bytes], None]]] = None  # (filter, handler)
        self._problems: Dict[str, str] = {}
        self._outage_since: Optional[float] = None  # monotonic time the broker was last lost (or never reached)
        self._outage_reason: Optional[str] = None  # logged once per outage and reason
        self._ever_connected = False
        self._refused = False  # the broker answered the last attempt with a refusal (CONNACK)
        self.outages = 0
        self.last_error: Optional[str] = None
        watch_connect_errors(self._client, self._connection_failed, config)
        self._flusher = threading.Thread(target=self._flush_loop, name="mqtt-outbox", daemon=True)
        # The frame loop never waits on the disk: events are journaled (fsynced, edge/mqtt/journal.py)
        # by one thread and written to the outbox by the flusher (a locked database or a hung SD
        # card once held the alarm escalation 9.7 s). The journal shares no lock with the outbox:
        # an event is durable even while SQLite waits on a lock (a kill then lost it: issue 40).
        self.journal = Journal(new_journal_path(outbox.path))
        outbox.own_journal = self.journal.path
        self._journaler = threading.Thread(target=self._journal_loop, name="mqtt-journal", daemon=True)
        self._to_journal: "queue.Queue[tuple]" = queue.Queue(maxsize=_MAX_QUEUED)
        # (topic, payload, journal number or None): what the flusher stores next
        self._to_store: "queue.Queue[tuple]" = queue.Queue(maxsize=_MAX_QUEUED)
        self._stored_through = 0  # the journal number of the last event the outbox file took

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        logger.info("MQTT: connecting to %s:%d as device %s", self.config.host, self.config.port, self.device)
        self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        self._client.loop_start()
        self._journaler.start()
        self._flusher.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Send what can be sent within timeout_s, say offline, disconnect."""
        deadline = time.monotonic() + timeout_s
        while self.connected and (self._to_journal.qsize() or self._to_store.qsize() or self.outbox.depth()) \
                and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(0.05)
        self._stop.set()
        self._wake.set()
        if self.connected:
            info = self._client.publish(topics.status_topic(self.prefix, self.device), b"offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
        self._journaler.join(timeout=2.0)
        self._flusher.join(timeout=2.0)
        self._store_queued()  # whatever the flusher had not written yet: stored before we say so
        in_memory = self.outbox.memory_depth()
        # The journal goes when the outbox file holds everything in it; else the next start imports it.
        self.journal.close(everything_stored=not in_memory and not self._journaler.is_alive()
                           and not self._flusher.is_alive())
        stored = self.outbox.depth() - in_memory
        why = f" ({self.last_error})" if self.last_error else ""
        if stored:
            logger.warning("MQTT: %d event(s) not delivered%s: they stay in the outbox %s and go out on the next "
                           "start", stored, why, self.outbox.path)
        if in_memory:  # the outbox's close() says where they went, or that they were lost
            logger.warning("MQTT: %d event(s) not delivered%s and held in memory only (the outbox file cannot be "
                           "written: %s)", in_memory, why, self.outbox.error)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Wait until the broker has accepted the connection; False after timeout_s without it."""
        return self._connected.wait(timeout_s)

    def on_command(self, command: str, handler: CommandHandler) -> None:
        self._handlers[command] = handler

    # -- what the daemon sends ---------------------------------------------------------------

    def send_event(self, camera: str, payload: Dict[str, object]) -> None:
        """Hand the event to the flusher thread, which stores it in the outbox (durable) and then
        publishes it; the caller (the frame loop) does not wait on the disk. Before start() or
        after stop(), or with 1,000 events already waiting, the caller stores it itself."""
        self._send_stored(topics.events_topic(self.prefix, self.device, camera), payload)

    def send_clip(self, camera: str, payload: Dict[str, object]) -> None:
        """An event's clip (README "Event clips"), through the outbox like an event."""
        self._send_stored(topics.clip_topic(self.prefix, self.device, camera), payload)

    def _send_stored(self, topic: str, payload: Dict[str, object]) -> None:
        item = (topic, payload)
        if self._journaler.is_alive() and not self._stop.is_set():
            try:
                self._to_journal.put_nowait(item)
                return
            except queue.Full:
                pass
        self.outbox.put(*item)
        self._wake.set()

    def _journal_loop(self) -> None:
        """Journal what the frame loop hands over (one fsync per batch), then pass it to the flusher."""
        while True:
            try:
                batch = [self._to_journal.get(timeout=0.5)]
            except queue.Empty:
                if self._stop.is_set():
                    break
                continue
            while len(batch) < 100:
                try:
                    batch.append(self._to_journal.get_nowait())
                except queue.Empty:
                    break
            try:
                last = self.journal.append(batch)
            except Exception:  # noqa: BLE001 - the events must still reach the outbox
                logger.exception("MQTT: the outbox journal hit an error; events go on to the outbox")
                last = None
            for index, (topic, payload) in enumerate(batch):
                number = None if last is None else last - len(batch) + 1 + index
                self._to_store.put((topic, payload, number))  # blocks only behind a full flusher queue
            self._wake.set()
        while True:  # stopping: what is left goes straight to the flusher's queue
            try:
                topic, payload = self._to_journal.get_nowait()
            except queue.Empty:
                return
            self._to_store.put((topic, payload, None))

    def _store_queued(self) -> None:
        while True:
            try:
                topic, payload, number = self._to_store.get_nowait()
            except queue.Empty:
                break
            if self.outbox.put(topic, payload) is not None and number is not None:
                # In the file, and (the outbox keeps order) so is everything journaled before it.
                self._stored_through = number
        self.journal.clear_through(self._stored_through)

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """A retained state (QoS 1): sent now if connected, and again on every connection (a broker
        without persistence forgets them). An empty payload removes the retained message."""
        with self._lock:
            if payload:
                self._retained[topic] = payload
            else:
                self._retained.pop(topic, None)
        if self.connected:
            self._client.publish(topic, payload, qos=1, retain=True)

    def watch_retained(self, topic_filter: str, handler: Callable[[str, bytes], None]) -> None:
        """Call handler(topic, payload) for each message under topic_filter: those the broker holds
        retained (on every connection: what an earlier run left there) and every later one, live
        or a removal (empty payload), from whoever sent it (this device's own echo too)."""
        self._watched = (topic_filter, handler)
        if self.connected:
            self._client.subscribe(topic_filter, qos=1)

    def send_snapshot(self, camera: str, jpeg: bytes) -> None:
        """Retained, latest only: sent now if connected, else on the next connection."""
        with self._lock:
            self._latest_snapshots[camera] = jpeg
        if self.connected:
            self._publish_snapshots()

    def send_camera_status(self, camera: str, status: Dict[str, object]) -> None:
        """Retained per-camera status (online/offline and why); QoS 1, not stored if offline."""
        self._client.publish(topics.camera_status_topic(self.prefix, self.device, camera),
                             json.dumps(status, separators=(",", ":")), qos=1, retain=True)

    def set_problems(self, problems: Dict[str, str]) -> None:
        """What does not work on the device now (outbox, buzzer, speech): shown in the retained
        status, so the control room sees a degraded device without reading its health."""
        with self._lock:
            if problems == self._problems:
                return
            self._problems = dict(problems)
        if self.connected:
            self._client.publish(topics.status_topic(self.prefix, self.device), self._status_payload(), qos=1,
                                 retain=True)

    def _status_payload(self) -> bytes:
        """`online` when all works (and `offline`, the last will); else a JSON object with the state
        and the problems, which the monitor reads too."""
        with self._lock:
            problems = dict(self._problems)
        if not problems:
            return b"online"
        return json.dumps({"state": "online", "problems": problems}, separators=(",", ":")).encode("utf-8")

    def send_health(self, health: Dict[str, object]) -> None:
        if self.connected:
            self._client.publish(topics.health_topic(self.prefix, self.device),
                                 json.dumps(health, separators=(",", ":")), qos=0)

    # -- paho callbacks (its network thread) --------------------------------------------------

    def _connection_failed(self, reason: str) -> None:
        """Paho's thread: an attempt failed or the connection dropped. Logged once per outage and
        reason, not on every retry."""
        self.last_error = reason
        if self._outage_since is None:
            self._outage_since = time.monotonic()
        if reason != self._outage_reason:
            # One error line per outage; what later attempts say (refused while the broker
            # restarts) is only information.
            level = logging.ERROR if self._outage_reason is None else logging.INFO
            self._outage_reason = reason
            logger.log(level, "MQTT: %s; events wait in the outbox (%d now), retrying every %.0f s at most", reason,
                       self.outbox.depth(), self.config.reconnect_max_s)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = True  # the disconnect that follows says less than this
            self._connection_failed(describe_refusal(reason_code))
            return
        if self._outage_since is not None:
            logger.warning("MQTT connected to %s:%d after %.1f s without it; sending the %d event(s) stored meanwhile",
                           self.config.host, self.config.port, time.monotonic() - self._outage_since,
                           self.outbox.depth())
        else:
            logger.info("MQTT connected to %s:%d", self.config.host, self.config.port)
        self._outage_since, self._outage_reason, self.last_error = None, None, None
        self._ever_connected = True
        client.publish(topics.status_topic(self.prefix, self.device), self._status_payload(), qos=1, retain=True)
        client.subscribe(topics.command_topic(self.prefix, self.device, "+"), qos=1)
        client.subscribe(topics.instance_topic(self.prefix, self.device), qos=1)
        self._claim(client)
        with self._lock:
            retained = dict(self._retained)
        for topic, payload in retained.items():
            client.publish(topic, payload, qos=1, retain=True)
        if self._watched is not None:
            client.subscribe(self._watched[0], qos=1)
        self._connected.set()
        self._publish_snapshots()
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if not self._stop.is_set() and not self._refused:
            if self._connected.is_set():
                self.outages += 1
            self._connection_failed(describe_disconnect(reason_code, self.config, self._ever_connected))
        self._refused = False
        self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        now = time.monotonic()
        with self._lock:
            seq = self._in_flight.pop(mid, None)
            if seq is None:
                # Either not an event (status, snapshot) or an event whose publish() has not
                # returned yet; keep it briefly so _hand_over can match it. mids wrap at 65535,
                # far slower than this expiry.
                self._early_acks = {m: t for m, t in self._early_acks.items() if now - t < _EARLY_ACK_TTL_S}
                self._early_acks[mid] = now
        if seq is not None:
            self.outbox.remove(seq)  # PUBACK: the broker has it
            self._wake.set()

    def _on_message(self, client, userdata, message) -> None:
        # Paho's network thread runs this: an exception here would end that thread, and with it
        # PUBACKs, reconnects and every later command. Whatever one message does stays with it.
        try:
            topic = message.topic
        except UnicodeDecodeError:
            self._refuse("(undecodable topic)", "topic is not UTF-8")
            return
        try:
            if topic == topics.instance_topic(self.prefix, self.device):
                self._on_claim(message.payload)
                return
            if topics.parse_command(topic, self.prefix, self.device) is None and self._watched is not None:
                self._watched[1](topic, message.payload)  # retained or live, removals (empty) too
                return
            self._handle_command(topic, message.payload)
        except Exception as exc:
            self._refuse(topic, f"could not be checked ({type(exc).__name__})")

    def _handle_command(self, topic: str, payload: bytes) -> None:
        command = topics.parse_command(topic, self.prefix, self.device)
        handler = self._handlers.get(command or "")
        if handler is None:
            self._refuse(topic, "unknown command")
            return
        if len(payload) > MAX_COMMAND_BYTES:  # before any decoding copies it (the broker's cap is the first line)
            self._refuse(topic, f"payload of {len(payload)} bytes (a command is at most {MAX_COMMAND_BYTES})")
            return
        if self._verifier is not None:
            ok, why = self._verifier.check(topic, payload)
            if not ok:
                self._refuse(topic, why)
                return
        try:
            handler(payload)
        except Exception:  # a bad command must never take the daemon down
            self.commands_failed += 1
            if self._refusal_log.allow(f"{command}: handler failed"):
                logger.exception("MQTT: command %s failed (%d failed so far)", command, self.commands_failed)

    def _refuse(self, topic: str, why: str) -> None:
        """A refused command, logged once a minute per topic and reason: a flood must not fill the log."""
        self.commands_refused += 1
        if self._refusal_log.allow(f"{topic}\n{why}"):
            logger.warning("MQTT: command on %s refused: %s (%d refused so far)", topic, why, self.commands_refused)

    # -- one name, one device ------------------------------------------------------------------

    def _claim(self, client: mqtt.Client) -> None:
        """Say who runs under this name: at every connection and every CLAIM_INTERVAL_S."""
        self._next_claim = time.monotonic() + CLAIM_INTERVAL_S
        claim = {"instance": self.instance, "host": socket.gethostname(), "started": round(self.started, 3),
                 "boot": boot_id()}
        client.publish(topics.instance_topic(self.prefix, self.device), json.dumps(claim).encode("utf-8"), qos=1)

    def _on_claim(self, payload: bytes) -> None:
        try:
            claim = json.loads(payload.decode("utf-8"))
            if isinstance(claim, dict) and claim.get("query") is True:  # the doctor asks who runs here
                self._claim(self._client)
                return
            instance, host = str(claim["instance"])[:64], str(claim.get("host", "?"))[:100]
            started = float(claim.get("started", 0.0))
        except (UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError, RecursionError):
            self._refuse(topics.instance_topic(self.prefix, self.device), "malformed instance claim")
            return
        if instance == self.instance:
            return  # our own
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if 0 < started < 1e11 else "?"
        self.name_conflict = (f"another device runs as '{self.device}' (host {host}, started {when}): its events, "
                              "acknowledgements and Home Assistant entities mix with this one's; give each device "
                              "its own mqtt.device")
        self._conflict_seen_at = time.monotonic()
        if instance not in self._conflicts_logged and len(self._conflicts_logged) < 100:
            self._conflicts_logged.add(instance)
            logger.error("MQTT: %s", self.name_conflict)

    def _expire_conflict(self) -> None:
        if self.name_conflict is not None and time.monotonic() - self._conflict_seen_at > 3 * CLAIM_INTERVAL_S:
            logger.warning("MQTT: no other device has claimed the name '%s' for %.0f s", self.device,
                           3 * CLAIM_INTERVAL_S)
            self.name_conflict = None

    # -- the outbox flusher ------------------------------------------------------------------

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            try:
                self._store_queued()
                self._expire_conflict()
                if self.connected and time.monotonic() >= self._next_claim:
                    self._claim(self._client)
                if self.connected:
                    self._hand_over()
            except Exception:  # the flusher must outlive any one bad row or write
                logger.exception("MQTT: the outbox flusher hit an error; it goes on")

    def _hand_over(self) -> None:
        """Give paho the next stored events, in seq order, up to max_inflight unacknowledged.

        paho keeps what it was given across reconnects and resends it itself, so each row is
        handed over once per process; after a restart everything still stored goes again
        (the monitor de-duplicates by event_id)."""
        with self._lock:
            room = self.config.max_inflight - len(self._in_flight)
            after, after_memory = self._last_handed, self._last_handed_memory
        if room <= 0:
            return
        for row in self.outbox.pending(after_seq=after, limit=room, after_memory=after_memory):
            if not self.connected:
                return
            # Never call paho while holding our lock: paho calls on_publish holding its own.
            info = self._client.publish(row.topic, row.encoded(), qos=1)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: paho queued it
                logger.warning("MQTT: publish of event seq %d failed (%s); retrying later", row.seq, info.rc)
                return
            with self._lock:
                if row.in_memory:
                    self._last_handed_memory = -row.seq
                else:
                    self._last_handed = row.seq
                acked = self._early_acks.pop(info.mid, None) is not None
                if not acked:
                    self._in_flight[info.mid] = row.seq
            if acked:
                self.outbox.remove(row.seq)

    def _publish_snapshots(self) -> None:
        with self._lock:
            snapshots = dict(self._latest_snapshots)
            self._latest_snapshots.clear()
        for camera, jpeg in snapshots.items():
            self._client.publish(topics.snapshot_topic(self.prefix, self.device, camera), jpeg, qos=1, retain=True)

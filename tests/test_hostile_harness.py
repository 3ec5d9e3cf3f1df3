"""Issue 30's hostile-peer harness: generated hostile payloads on every topic the device and the
control room subscribe to, against the real components on a real Mosquitto, and after each batch
the checks that matter to the people they protect.

The device is the daemon's own MQTT side (MqttPublisher with a command key, EventRouter: what
`fall-edge run` runs); the control room is the real `fall-edge console` process (waitress, its
monitor, its SQLite log) read over HTTP, and at the end in Chromium. Hypothesis generates the
payloads: events, health reports, camera status, snapshots and commands with one to three fields
replaced by wrong types, huge and non-finite numbers, surrogates and other non-ASCII text, deep
nesting, megabyte strings, terminal escape sequences and foreign device ids; and raw bytes.

After each batch: the device's network thread is alive and a valid signed acknowledgement still
takes effect on it; a real alarm from the device reaches the console and every page answers 200
with it; the console process is alive, under its memory bound, and its CPU time stays bounded.
The outbox half generates damage to the SQLite file and checks that opening it never fails, that
what it keeps is what was stored, in order, and that new events are stored and sent.
"""

import base64
import http.cookiejar
import json
import os
import sqlite3
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker import PAHO_CLIENT_ARGS, Broker, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import Config, MqttConfig
from edge.daemon.router import EventRouter
from edge.mqtt.commands import sign_command
from edge.mqtt.outbox import Outbox
from edge.mqtt.publisher import MqttPublisher
from edge.types import FallEvent

test_console = pytest.importorskip("test_console", reason="selenium or flask missing: scripts/bootstrap.sh --dev")

KEY = b"0123456789abcdef0123456789abcdef"
BATCHES = settings(max_examples=25, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                          HealthCheck.data_too_large])
CONSOLE_MAX_RSS_MB = 400  # the console at rest is ~80 MB; a payload that grows it without bound fails here
CONSOLE_MAX_CPU_S_PER_BATCH = 5.0

# Markers replaced in the JSON text by what json.dumps cannot write.
_SPECIAL = {"\u00a7BIG\u00a7": "1e999", "\u00a7LONG\u00a7": "9" * 400, "\u00a7DEEP\u00a7": "[" * 1000 + "]" * 1000}
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\x1b]52;c;aGVsbG8=\x07", "\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\ud800", "\udfff x",
                     "\u202e\u0645\u0631\u062d\u0628\u0627", "<script>alert(1)</script>", "../../../etc/passwd",
                     "\x00", "x" * 1_000_000, "evil/../edge1", "é" * 1000]))
HOSTILE_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), HOSTILE_TEXT,
              st.sampled_from(sorted(_SPECIAL))),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=10)


def alarm_event(kind: str = "alarm") -> FallEvent:
    return FallEvent(event_id=str(uuid.uuid4()), type=kind, camera="cam0", track_id=1, stream_time_s=3.0,
                     wall_time="2026-12-06T10:00:00.000Z", confidence=0.9, torso_angle_deg=80.0,
                     bbox=[1.0, 2.0, 3.0, 4.0], fall_started_s=2.0, started_at="2026-12-06T09:59:59.000Z",
                     detector_label="Fall")


def event_template(device: str = "edge1") -> dict:
    return {**alarm_event().to_dict(), "device": device}


TEMPLATES = {
    "events": lambda: event_template(),
    "health": lambda: {"processed_fps": 9.5, "temperatures_c": {"cpu": 41.0}, "outbox_depth": 0,
                       "cameras": {"cam0": {"outages": 0}}, "problems": {}},
    "status": lambda: {"status": "online", "reason": ""},
    # a real clip's fields, with a tiny MP4 header as its video (issue 31)
    "clip": lambda: {"event_id": str(uuid.uuid4()), "type": "clip", "clip_of": str(uuid.uuid4()),
                     "event_type": "fall_detected", "device": "edge1", "camera": "cam0", "codec": "h264/mp4",
                     "frames": 100, "duration_s": 10.0, "bytes": 24, "kept_on_device": False, "reason": None,
                     "data": base64.b64encode(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 12).decode("ascii")},
    "cmd": lambda: json.loads(sign_command(b"not the site key, 32 bytes long!", "fall/edge1/cmd/ack",
                                           event_id=str(uuid.uuid4()), operator="mallory")),
}
DEVICES = st.sampled_from(["edge1", "evil", "edge2", "\u00e9vil", "x" * 200])


@st.composite
def hostile_messages(draw) -> tuple:
    """(topic, payload bytes): a template with fields replaced, or raw bytes, on a subscribed topic."""
    leaf = draw(st.sampled_from(["events", "health", "status", "camera_status", "snapshot", "clip", "cmd/ack",
                                 "cmd/test"]))
    device = "edge1" if leaf.startswith("cmd") else draw(DEVICES)
    topic = {"events": f"fall/{device}/cam0/events", "health": f"fall/{device}/health",
             "status": f"fall/{device}/status", "camera_status": f"fall/{device}/cam0/status",
             "snapshot": f"fall/{device}/cam0/snapshot", "clip": f"fall/{device}/cam0/clip"}.get(leaf,
                                                                                         f"fall/edge1/{leaf}")
    if draw(st.integers(0, 5)) == 0:
        return topic, draw(st.binary(max_size=300))
    template = TEMPLATES["cmd" if leaf.startswith("cmd") else "status" if leaf == "camera_status"
                        else leaf if leaf in TEMPLATES else "events"]()
    keys = sorted(template) + ["device", "acknowledges", "operator", "extra", "keypoints"]
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
        template[key] = draw(HOSTILE_VALUE)
    text = json.dumps(template, allow_nan=True)
    for marker, replacement in _SPECIAL.items():
        text = text.replace(json.dumps(marker), replacement)
    if leaf == "snapshot":  # a JPEG start, then whatever
        return topic, b"\xff\xd8\xff\xfe" + text.encode("utf-8", "surrogatepass")
    return topic, text.encode("utf-8", "surrogatepass")


class ControlRoom:
    """The real console process, logged in over HTTP."""

    def __init__(self, tmp_path: Path, broker: Broker) -> None:
        self.process, self.base = test_console.start_console(tmp_path, broker)
        self.http = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        form = urllib.parse.urlencode({"name": "alice", "password": test_console.PASSWORD}).encode()
        self.http.open(f"{self.base}/login", data=form, timeout=10).read()

    def get(self, path: str) -> tuple:
        try:
            with self.http.open(f"{self.base}{path}", timeout=10) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    def usage(self) -> tuple:
        """(RSS in MB, CPU seconds so far) of the console process, from /proc."""
        with open(f"/proc/{self.process.pid}/status") as status:
            rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return rss_kb / 1024.0, (int(fields[11]) + int(fields[12])) / ticks

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One broker, one keyed device, one control room, one attacker for all the batches."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    key_file = tmp_path / "command.key"
    key_file.write_bytes(KEY + b"\n")
    broker = Broker(tmp_path).start()
    device_config = MqttConfig(enabled=True, host="127.0.0.1", port=broker.port, device="edge1",
                               command_key_file=str(key_file), keepalive_s=5, reconnect_max_s=1.0,
                               outbox_path=str(tmp_path / "outbox.sqlite"))
    config = Config()
    config.mqtt = device_config
    publisher = MqttPublisher(device_config, Outbox(tmp_path / "outbox.sqlite"))
    publisher.start()
    router = EventRouter(config, publisher=publisher, print_events=False)
    room = ControlRoom(tmp_path, broker)
    attacker = mqtt.Client(client_id="attacker", **PAHO_CLIENT_ARGS)
    attacker.connect("127.0.0.1", broker.port)
    attacker.loop_start()
    assert wait_for(lambda: publisher.connected)
    try:
        yield broker, publisher, router, room, attacker
    finally:
        attacker.loop_stop()
        room.close()
        publisher.stop()
        broker.stop()


@BATCHES
@given(batch=st.lists(hostile_messages(), min_size=5, max_size=15))
def test_hostile_batches_never_silence_the_device_or_blind_the_control_room(site, batch):
    broker, publisher, router, room, attacker = site
    _, cpu_before = room.usage()
    for topic, payload in batch:
        attacker.publish(topic, payload, qos=1).wait_for_publish(10)
    # The device still takes a valid signed acknowledgement of its own alarm ...
    alarm = alarm_event()
    acknowledged = router.events_by_type["acknowledged"]
    router._route(alarm, None)
    topic = "fall/edge1/cmd/ack"
    attacker.publish(topic, sign_command(KEY, topic, event_id=alarm.event_id, operator="ops"), qos=1)
    assert wait_for(lambda: router.events_by_type["acknowledged"] == acknowledged + 1, timeout_s=10)
    assert publisher._client._thread is not None and publisher._client._thread.is_alive()
    assert wait_for(lambda: publisher.outbox.depth() == 0, timeout_s=10)  # PUBACKs still read
    # ... and the control room shows that alarm, on every page.
    assert wait_for(lambda: alarm.event_id in room.get("/fragment/dashboard")[1], timeout_s=10)
    for path in ("/", "/fragment/dashboard", "/history", "/health", "/metrics"):
        status, _ = room.get(path)
        assert status == 200, (path, status)
    assert room.process.poll() is None
    rss_mb, cpu_after = room.usage()
    assert rss_mb < CONSOLE_MAX_RSS_MB
    assert cpu_after - cpu_before < CONSOLE_MAX_CPU_S_PER_BATCH


def test_after_the_batches_the_alarm_is_on_the_operators_screen(site):
    """The last check in a real browser: a fall sent after all the hostile batches is on the
    page, with its Acknowledge button."""
    from selenium.webdriver.common.by import By

    broker, publisher, router, room, attacker = site
    driver = test_console.browser()
    try:
        test_console.log_in(driver, room.base, test_console.PASSWORD)
        alarm = alarm_event("fall_detected")  # a new fall (the batches' alarms were acknowledged)
        router._route(alarm, None)
        assert wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, f"#alarm-{alarm.event_id} button.ack"),
                        timeout_s=10)
    finally:
        driver.quit()


# -- the outbox: generated damage to its file --------------------------------------------------


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(1, 8192), st.sampled_from([b"\x00", b"\xff",
                                                                                              b"\xa5"])),
                       min_size=1, max_size=4))
def test_damage_to_the_outbox_file_never_stops_storing_or_invents_events(tmp_path_factory, damage):
    folder = tmp_path_factory.mktemp("outbox")
    path = folder / "outbox.sqlite"
    outbox = Outbox(path)
    stored = {outbox.put("fall/edge1/cam0/events", {"event_id": str(index), "pad": "x" * 300}): str(index)
              for index in range(120)}
    outbox.close()
    data = bytearray(path.read_bytes())
    for where, length, byte in damage:
        start = int(where * max(0, len(data) - 1))
        data[start:start + length] = byte * min(length, len(data) - start)
    path.write_bytes(bytes(data))
    reopened = Outbox(path)  # never raises, whatever the damage
    kept = reopened.pending(limit=1000)
    # What it keeps is what was stored under that seq, in order: nothing invented or reordered.
    assert [row.seq for row in kept] == sorted(row.seq for row in kept)
    assert all(stored.get(row.seq) == row.payload.get("event_id") for row in kept if row.seq > 0)
    # ... and it stores and hands out new events, after what it kept.
    new_seq = reopened.put("fall/edge1/cam0/events", {"event_id": "after"})
    assert new_seq != 0
    assert reopened.pending(limit=1000)[-1].payload["event_id"] == "after"
    reopened.close()
    with sqlite3.connect(str(path)) as db:  # and the file it left is a database again
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

"""Issue 30: one hostile message from any device on the broker must not blind the control room.
A real Mosquitto, the console's monitor storing what arrives, and the console's pages rendered by
Flask's test client against that log."""

import json
import sqlite3
import time

import pytest
from broker import Collector, wait_for
from test_mqtt import fall_event, mqtt_config

from edge.config import ConsoleConfig, MqttConfig, OperatorConfig
from edge.console.log import EventLog
from edge.mqtt.monitor import Monitor
from edge.mqtt.schema import health_problem, nesting_depth

security = pytest.importorskip("werkzeug.security", reason="flask missing: scripts/bootstrap.sh --dev")
app_module = pytest.importorskip("edge.console.app", reason="flask missing: scripts/bootstrap.sh --dev")

PASSWORD = "a long enough password"


def deep(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


class Console:
    """The monitor on a real broker, the console app on its log, an operator logged in."""

    def __init__(self, broker, tmp_path) -> None:
        self.db = tmp_path / "console.sqlite"
        self.monitor = Monitor(mqtt_config(broker, device=""), self.db, client_id="console", everything=True)
        self.monitor.start()
        settings = ConsoleConfig(operators=[OperatorConfig("alice", security.generate_password_hash(PASSWORD))])
        self.app = app_module.create_app(settings, EventLog(self.db), self.monitor, app_module.Hub(),
                                         app_module.session_secret(self.db))
        self.app.config["TESTING"] = True
        self.client = self.app.test_client()
        assert wait_for(self.monitor.connected.is_set)
        assert self.client.post("/login", data={"name": "alice", "password": PASSWORD}).status_code == 302

    def pages(self) -> dict:
        return {path: self.client.get(path) for path in ("/", "/fragment/dashboard", "/history")}

    def store(self, table: str, **row) -> None:
        """A row written as an older monitor (without today's checks) would have written it."""
        with sqlite3.connect(self.db) as db:
            names = ", ".join(row)
            db.execute(f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({', '.join('?' * len(row))})",
                       tuple(row.values()))

    def close(self) -> None:
        self.monitor.stop()


@pytest.fixture
def console(broker, tmp_path):
    running = Console(broker, tmp_path)
    yield running
    running.close()


def publish_event(device: Collector, name: str, event: dict) -> None:
    device.client.publish(f"fall/{name}/cam0/events", with_deep_json(dict(event, device=name)), qos=1)


def publish_ack(device: Collector, name: str, target, operator: str) -> None:
    """An `acknowledged` event from device `name` naming the target event (as a device publishes it)."""
    ack = fall_event("acknowledged", track_id=target.track_id)
    ack.acknowledges, ack.operator = target.event_id, operator
    publish_event(device, name, ack.to_dict())


def with_deep_json(value: dict) -> str:
    """JSON text where the value "DEEP<n>" becomes lists nested n deep (json.dumps itself recurses)."""
    text = json.dumps(value)
    for levels in (900, 980):
        text = text.replace(f'"DEEP{levels}"', "[" * levels + "]" * levels)
    return text


def test_health_checks_each_field_the_console_shows():
    assert health_problem({"processed_fps": 9.5, "cameras": {"cam0": {"outages": 0}}, "newer_field": [1]}) is None
    for report, why in (({"temperatures_c": [1, 2, 3]}, "temperatures_c has the wrong type"),
                        ({"temperatures_c": {"cpu": "hot"}}, "temperatures_c.cpu has the wrong type"),
                        ({"outbox_depth": 1e309}, "wrong type"), ({"processed_fps": float("nan")}, "finite"),
                        ({"cameras": {"cam0": 5}}, "cameras.cam0 has the wrong type"),
                        ({"newer_field": deep(10)}, "nested deeper"), ([1], "not a JSON object")):
        assert why in (health_problem(report) or ""), report
    assert nesting_depth(deep(300)) == 6  # counted no further than the limit, without recursion


def test_one_odd_health_report_never_blanks_the_console(broker, console):
    """Defect 2: {"temperatures_c": [1, 2, 3]} on any device's health made / and the dashboard 500."""
    device = Collector(broker, "fall/#")
    try:
        device.client.publish("fall/edge1/health", json.dumps({"processed_fps": 9.5, "temperatures_c": {"cpu": 41.0}}),
                              qos=1)
        device.client.publish("fall/evil/health", json.dumps({"temperatures_c": [1, 2, 3]}), qos=1)
        device.client.publish("fall/evil2/health", with_deep_json({"cameras": "DEEP900"}), qos=1)
        publish_event(device, "edge1", fall_event("alarm").to_dict())
        assert wait_for(lambda: console.monitor.skipped >= 2 and len(console.monitor.events()) == 1)
        # ... and one stored by an older monitor that did not check it
        console.store("health", device="old", payload=json.dumps({"temperatures_c": [1, 2, 3]}),
                      received_at=time.time())
        pages = console.pages()
        assert all(page.status_code == 200 for page in pages.values()), {p: r.status_code for p, r in pages.items()}
        assert b"edge1" in pages["/"].data and b"41.0" in pages["/"].data and b"old" in pages["/"].data
    finally:
        device.close()


def test_one_deeply_nested_event_never_blanks_the_dashboard_or_history(broker, console):
    """Defect 3: an extra field nested 980 deep passed the schema; every render then recursed
    past Python's limit until 5,000 newer events pushed it out."""
    device = Collector(broker, "fall/#")
    try:
        hostile = dict(fall_event("alarm").to_dict(), extra="DEEP980")
        publish_event(device, "evil", hostile)
        real = fall_event("alarm", track_id=2)
        publish_event(device, "edge1", real.to_dict())
        assert wait_for(lambda: len(console.monitor.events()) == 1 and console.monitor.skipped >= 1)
        huge = dict(fall_event("alarm", track_id=3).to_dict(), extra="x" * 200_000)  # over the size limit
        publish_event(device, "evil", huge)
        assert wait_for(lambda: console.monitor.skipped >= 2)
        # rows an older monitor stored without these checks
        older = dict(fall_event("alarm", track_id=4).to_dict(), extra="DEEP980")
        console.store("events", event_id=older["event_id"], device="evil", camera="cam0", type="alarm",
                      payload=with_deep_json(older), received_at=time.time())
        console.store("events", event_id="not-json", device="evil", camera="cam0", type="alarm",
                      payload="{broken", received_at=time.time())
        pages = console.pages()
        assert all(page.status_code == 200 for page in pages.values()), {p: r.status_code for p, r in pages.items()}
        assert real.event_id.encode() in pages["/"].data and real.event_id.encode() in pages["/history"].data
    finally:
        device.close()


def test_a_device_cannot_close_another_devices_alarm(broker, console):
    """Defect 5: an `acknowledged` event from device evil naming edge1's event id closed edge1's
    real alarm on every operator's screen (and stopped the beep)."""
    device = Collector(broker, "fall/#")
    try:
        alarm = fall_event("alarm", track_id=7)
        publish_event(device, "edge1", alarm.to_dict())
        publish_ack(device, "evil", alarm, "mallory")
        assert wait_for(lambda: len(console.monitor.events()) == 2)
        (shown,) = [a for a in EventLog(console.db).alarms() if a.event_id == alarm.event_id]
        assert shown.is_open
        # edge1's own acknowledgement does close it
        publish_ack(device, "edge1", alarm, "alice")
        assert wait_for(lambda: len(console.monitor.events()) == 3)
        (shown,) = [a for a in EventLog(console.db).alarms() if a.event_id == alarm.event_id]
        assert not shown.is_open and shown.closed_by["operator"] == "alice"
    finally:
        device.close()


def test_the_monitor_never_stores_an_unusable_health_report(broker, tmp_path):
    monitor = Monitor(MqttConfig(host="127.0.0.1", port=broker.port), tmp_path / "m.sqlite", everything=True)
    monitor.start()
    device = Collector(broker, "fall/#")
    try:
        assert wait_for(monitor.connected.is_set)
        device.client.publish("fall/evil/health", json.dumps({"temperatures_c": [1, 2, 3]}), qos=1)
        assert wait_for(lambda: monitor.skipped == 1)
        with sqlite3.connect(tmp_path / "m.sqlite") as db:
            assert db.execute("SELECT COUNT(*) FROM health").fetchone()[0] == 0
    finally:
        device.close()
        monitor.stop()


def test_odd_page_numbers_and_tokens_get_answers_not_errors(console):
    """Defect 8: `/history?page=99999999999999999999` and a non-ASCII CSRF token gave 500."""
    for page in ("99999999999999999999", "-5", "abc", "0"):
        assert console.client.get(f"/history?page={page}").status_code == 200, page
    for token in ("é", "\u2603" * 40, ""):
        answer = console.client.post("/api/ack", json={"event_id": "x"}, headers={"X-CSRF-Token": token})
        assert answer.status_code == 403, token


def test_the_terminal_monitor_shows_escape_sequences_as_text(broker, tmp_path, capsys):
    """Defect 10: `fall-edge monitor` passed cursor moves, OSC titles and OSC 52 clipboard writes from
    event fields and status problems straight to the operator's terminal."""
    from edge.mqtt.monitor import print_event_line

    clipboard = "\x1b]52;c;cm0gLXJmIH4=\x07"
    monitor = Monitor(MqttConfig(host="127.0.0.1", port=broker.port), tmp_path / "m.sqlite", everything=True)
    monitor.start()
    device = Collector(broker, "fall/#")
    try:
        assert wait_for(monitor.connected.is_set)
        status = {"state": "online", "problems": {"buzzer": "broken" + clipboard + "\x1b[2J"}}
        device.client.publish("fall/edge1/status", json.dumps(status), qos=1, retain=True)
        event = dict(fall_event("alarm").to_dict(), device="edge1", camera="cam0", ts="\x1b]0;pwned\x07")
        device.client.publish("fall/edge1/cam0/events", json.dumps(event), qos=1)
        assert wait_for(lambda: len(monitor.events()) == 1 and "problems" in monitor.devices().get("edge1", ""))
        table = monitor.table()
        assert "\x1b" not in table and "\x07" not in table and "\\x1b]52;c;" in table
        print_event_line(event, True, as_json=False)
        print_event_line({"type": "status", "device": "edge1", "status": "x\x1b[H\x9b"}, True, as_json=False)
        print_event_line(event, True, as_json=True)
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
        assert "\\x1b]0;pwned\\x07" in out
    finally:
        device.close()
        monitor.stop()


def test_the_same_falls_later_alarm_is_not_a_new_open_alarm(broker, console):
    """Defect 9: after an operator's ack, the fall's `alarm` (still down after the hold) showed as a
    new open alarm (and beeped again). A new fall on the same track does open one."""
    device = Collector(broker, "fall/#")
    try:
        fell = fall_event("fall_detected", track_id=4)
        publish_event(device, "edge1", fell.to_dict())
        publish_ack(device, "edge1", fell, "alice")
        held = fall_event("alarm", track_id=4)
        publish_event(device, "edge1", held.to_dict())
        assert wait_for(lambda: len(console.monitor.events()) == 3)
        shown = {a.event_id: a for a in EventLog(console.db).alarms()}
        # (issue 41: the fall's later `alarm` joins the fall's own card, acknowledged with it)
        assert held.event_id not in shown and not shown[fell.event_id].is_open
        assert shown[fell.event_id].escalation["event_id"] == held.event_id
        assert shown[fell.event_id].closed_by["operator"] == "alice"
        assert ("edge1", "cam0", 4) not in console.monitor.open_alarms  # nor in `fall-edge monitor`'s table
        again = fall_event("fall_detected", track_id=4)
        publish_event(device, "edge1", again.to_dict())
        assert wait_for(lambda: len(console.monitor.events()) == 4)
        assert {a.event_id: a for a in EventLog(console.db).alarms()}[again.event_id].is_open
        assert console.monitor.open_alarms[("edge1", "cam0", 4)].event_id == again.event_id
    finally:
        device.close()


def test_a_device_flooding_snapshots_cannot_push_out_another_devices(broker, tmp_path):
    """Defect 8: one device's pictures counted against every device's (no per-device quota) and
    were stored at any size (20 x 5 MB as they came)."""
    import cv2
    import numpy as np

    from edge.mqtt.monitor import MAX_SNAPSHOT_BYTES
    from edge.mqtt.schema import tag_snapshot

    def picture(event_id: str, pad: int = 0) -> bytes:
        ok, jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), 90, np.uint8))
        assert ok
        return tag_snapshot(jpeg.tobytes(), event_id) + b"\0" * pad  # bytes after the end marker: still a JPEG

    db = tmp_path / "console.sqlite"
    monitor = Monitor(mqtt_config(broker, device=""), db, client_id="console",
                      everything=True, snapshot_keep=5)
    monitor.start()
    device = Collector(broker, "fall/#")
    try:
        assert wait_for(monitor.connected.is_set)
        real = fall_event("fall_detected")
        device.client.publish("fall/edge1/cam0/snapshot", picture(real.event_id), qos=1)
        assert wait_for(lambda: EventLog(db).snapshot(real.event_id) is not None)
        flood = [fall_event("fall_detected", track_id=i).event_id for i in range(2, 32)]
        for event_id in flood:
            device.client.publish("fall/evil/cam0/snapshot", picture(event_id), qos=1)
        oversized = fall_event("fall_detected", track_id=40).event_id
        device.client.publish("fall/evil/cam0/snapshot", picture(oversized, MAX_SNAPSHOT_BYTES), qos=1)
        assert wait_for(lambda: monitor.skipped >= 1 and EventLog(db).snapshot(flood[-1]) is not None)
        log = EventLog(db)
        assert log.snapshot(real.event_id) is not None  # the quiet device's picture is still there
        assert sum(log.snapshot(e) is not None for e in flood) == 5  # the flood keeps its newest five
        assert log.snapshot(oversized) is None
    finally:
        device.close()
        monitor.stop()


def test_live_pages_are_capped_and_a_page_that_closes_gives_its_place_back(console):
    """Defect 8: every live page holds one of the server's threads; 16 of them froze the console.
    The pages past the cap are told to refresh on a timer (503 on /stream, dashboard.js polls)."""
    cap = app_module.MAX_LIVE_PAGES
    assert cap < app_module.SERVER_THREADS
    streams = [console.client.get("/stream", buffered=False) for _ in range(cap)]
    assert [s.status_code for s in streams] == [200] * cap
    refused = console.client.get("/stream")
    assert refused.status_code == 503 and b"refreshes every" in refused.data
    assert console.client.get("/fragment/dashboard").status_code == 200  # the rest still served
    streams.pop().close()  # a page closed before its stream began
    again = console.client.get("/stream", buffered=False)
    assert again.status_code == 200
    for stream in streams + [again]:
        stream.close()


def test_health_reports_refresh_the_pages_at_most_every_few_seconds_and_events_at_once():
    """Defect 8: every health report re-rendered the dashboard on every open page (200 devices:
    62% of a core for one page). Reports in a burst give one refresh now and one after the quiet
    interval; an event goes out at once, whatever the reports are doing."""
    hub = app_module.Hub(quiet_refresh_s=0.5)
    page = hub.listen()
    try:
        for _ in range(200):
            hub.publish("health")
        time.sleep(0.2)
        assert page.qsize() == 1  # the first report refreshes at once ...
        hub.publish("alarm")
        assert page.qsize() == 2  # ... an alarm is never held back ...
        time.sleep(0.6)
        assert page.qsize() == 3  # ... and the rest of the burst gives one more refresh
        assert [page.get_nowait() for _ in range(3)] == ["health", "alarm", "health"]
    finally:
        hub.close()


def test_each_refused_or_failed_message_and_page_is_counted_in_health_and_metrics(broker, console, caplog):
    """Done-when of issue 30: every per-message handler contains its failure, logs it once per
    topic and reason, and counts it in /health and /metrics."""
    import logging

    device = Collector(broker, "fall/#")
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(3):  # the same bad message three times: logged once, counted three times
                device.client.publish("fall/evil/cam0/events", b"\xff not json", qos=1)
            device.client.publish("fall/evil/health", json.dumps({"temperatures_c": [1, 2, 3]}), qos=1)
            device.client.publish("fall/evil/cam0/snapshot", b"not a jpeg", qos=1)
            assert wait_for(lambda: console.monitor.skipped >= 5)
        assert caplog.text.count("message on fall/evil/cam0/events skipped") == 1
        # a time stored as text (a foreign writer) no longer fails every page ...
        console.store("events", event_id="odd", device="evil", camera="cam0", type="alarm",
                      payload=json.dumps(fall_event("alarm").to_dict()), received_at="not a time")
        assert all(page.status_code == 200 for page in console.pages().values())
        # ... and a log the pages cannot read (its snapshots table gone) fails those pages alone:
        # counted, logged once per page and error, the console answering
        with sqlite3.connect(console.db) as db:
            db.execute("DROP TABLE snapshots")
        for _ in range(2):
            pages = console.pages()
        failed = [path for path, page in pages.items() if page.status_code == 500]
        assert failed == ["/", "/fragment/dashboard"] and pages["/history"].status_code == 200
        assert caplog.text.count("console: / could not be served") == 1
        health = console.client.get("/health").get_json()
        assert health["messages_skipped"] == {"events": 3, "health": 1, "snapshot": 1}
        assert health["messages_failed"] == {}
        assert health["pages_failed"] == {"dashboard": 2, "dashboard_fragment": 2}
        metrics = console.client.get("/metrics").get_data(as_text=True)
        assert 'fall_edge_console_messages_skipped_total{kind="events"} 3.0' in metrics
        assert "fall_edge_console_broker_connected 1.0" in metrics
    finally:
        device.close()


def test_one_fall_is_one_card_with_its_latest_state(broker, console):
    """Issue 41, defect 2: one fall was two alarm cards, FALL (with the clip) and STILL DOWN
    (without, placed on top), each with its own Acknowledge. The fall's `alarm` now joins the
    fall's card: one card, its latest state, one acknowledgement; another track's alarm is its own."""
    device = Collector(broker, "fall/#")
    try:
        fell = fall_event("fall_detected", track_id=5)
        held = fall_event("alarm", track_id=5)
        other = fall_event("fall_detected", track_id=6)
        for event in (fell, held, other):
            publish_event(device, "edge1", event.to_dict())
        assert wait_for(lambda: len(console.monitor.events()) == 3)
        alarms = EventLog(console.db).alarms()
        assert sorted(a.event_id for a in alarms) == sorted([fell.event_id, other.event_id])
        (card,) = [a for a in alarms if a.event_id == fell.event_id]
        assert card.is_open and card.still_down and card.escalation["event_id"] == held.event_id
        publish_ack(device, "edge1", fell, "alice")
        assert wait_for(lambda: len(console.monitor.events()) == 4)
        shown = {a.event_id: a for a in EventLog(console.db).alarms()}
        assert not shown[fell.event_id].is_open and shown[other.event_id].is_open
    finally:
        device.close()

"""MQTT to the VMS against a real Mosquitto: schema, last will, store and forward, TLS, auth, ack."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
from broker import Broker, Collector, make_tls_files, wait_for
from conftest import run_daemon_on_clip

from edge.alarms.buzzer import Buzzer
from edge.alarms.controller import LocalAlarm
from edge.config import BuzzerConfig, Config, MqttConfig
from edge.daemon.health import HealthReporter
from edge.daemon.router import EventRouter, mqtt_payload
from edge.mqtt.monitor import Monitor
from edge.mqtt.outbox import Outbox
from edge.mqtt.publisher import MqttPublisher
from edge.types import FallEvent

ROOT = Path(__file__).resolve().parents[1]


def mqtt_config(broker: Broker, device="edge1", **overrides) -> MqttConfig:
    config = MqttConfig(enabled=True, host="127.0.0.1", port=broker.port, device=device, keepalive_s=5,
                        reconnect_min_s=1, reconnect_max_s=2, **overrides)
    return config


def fall_event(kind="fall_detected", track_id=1, camera="cam0") -> FallEvent:
    return FallEvent(event_id=str(uuid.uuid4()), type=kind, camera=camera, track_id=track_id, stream_time_s=3.0,
                     wall_time="2026-11-22T10:00:00.000Z", confidence=0.9, torso_angle_deg=80.0,
                     bbox=[1.0, 2.0, 3.0, 4.0], fall_started_s=2.0, started_at="2026-11-22T09:59:59.000Z",
                     detector_label="Fall", keypoints=[[1.0, 2.0, 0.9]] * 18)


def start_publisher(config: MqttConfig, tmp_path: Path) -> MqttPublisher:
    publisher = MqttPublisher(config, Outbox(tmp_path / f"outbox-{uuid.uuid4().hex[:6]}.sqlite"))
    publisher.start()
    return publisher


def test_daemon_publishes_events_status_and_snapshot(broker, tmp_path, clips_dir):
    """`fall-edge run` on a real fall clip, with MQTT on: what the control room receives."""
    collector = Collector(broker)
    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  port: {broker.port}\n  device: hall-3\n"
                      f"  outbox_path: {tmp_path}/outbox.sqlite\n  snapshot_dir: {tmp_path}/snaps\n"
                      f"output:\n  camera: door\n")
    result = run_daemon_on_clip(config, clips_dir / "gmdcsa24_s3_fall20.mp4")
    assert result.returncode == 0, result.stderr
    assert wait_for(lambda: len(collector.events()) >= 2)
    events = collector.events()
    assert [e["type"] for e in events] == ["fall_detected", "alarm"]
    for event in events:
        assert set(event) >= {"event_id", "seq", "type", "device", "camera", "track_id", "started_at", "ts",
                              "confidence", "torso_angle_deg", "bbox", "keypoints", "detector_label", "snapshot"}
        assert event["device"] == "hall-3" and event["camera"] == "door"
        assert len(event["keypoints"]) == 18 and len(event["bbox"]) == 4
        assert event["ts"].endswith("Z") and event["started_at"] < event["ts"]
        assert (tmp_path / "snaps" / event["snapshot"]).is_file()
    assert events[1]["seq"] > events[0]["seq"]
    assert wait_for(lambda: [p for p, _ in collector.on("hall-3/status")][-1:] == [b"offline"])
    assert [p for p, _ in collector.on("hall-3/status")][0] == b"online"
    snapshot, _ = collector.on("door/snapshot")[-1]
    image = cv2.imdecode(np.frombuffer(snapshot, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3)
    late = Collector(broker, "fall/hall-3/door/snapshot")  # retained: a new subscriber gets it at once
    assert wait_for(lambda: late.on("door/snapshot") and late.on("door/snapshot")[0][1] is True)
    late.close()
    collector.close()


def test_last_will_when_the_daemon_is_killed(broker, tmp_path):
    collector = Collector(broker)
    script = (f"import time\nfrom pathlib import Path\nfrom edge.config import MqttConfig\n"
              f"from edge.mqtt.outbox import Outbox\nfrom edge.mqtt.publisher import MqttPublisher\n"
              f"p = MqttPublisher(MqttConfig(port={broker.port}, device='doomed', keepalive_s=1), "
              f"Outbox(Path('{tmp_path}/o.sqlite')))\np.start()\ntime.sleep(60)\n")
    daemon = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert wait_for(lambda: [p for p, _ in collector.on("doomed/status")] == [b"online"])
        daemon.kill()
        assert wait_for(lambda: [p for p, _ in collector.on("doomed/status")] == [b"online", b"offline"], 10)
    finally:
        daemon.kill()
        daemon.wait()
        collector.close()


def test_broker_down_while_100_events_happen(tmp_path):
    """Every event is stored first: all 100 reach the monitor exactly once, in order."""
    broker = Broker(tmp_path).start()
    monitor = Monitor(mqtt_config(broker), tmp_path / "monitor.sqlite", client_id="control-room")
    monitor.start()
    publisher = start_publisher(mqtt_config(broker), tmp_path)
    try:
        assert wait_for(lambda: monitor.connected.is_set() and publisher.connected)
        broker.stop()
        assert wait_for(lambda: not publisher.connected)
        sent = []
        for index in range(100):
            event = fall_event(track_id=index)
            sent.append(event.event_id)
            publisher.send_event("cam0", {"event_id": event.event_id, "type": "alarm", "track_id": index})
        assert wait_for(lambda: publisher.outbox.depth() == 100)  # stored by the flusher thread
        broker.start()
        assert wait_for(lambda: len(monitor.events()) >= 100, timeout_s=30)
        assert wait_for(lambda: publisher.outbox.depth() == 0)
        received = monitor.events()
        assert [e["event_id"] for e in received] == sent  # exactly once each, in the order they happened
        seqs = [e["seq"] for e in received]
        assert seqs == sorted(seqs) and len(set(seqs)) == 100
        assert publisher.outages == 1
    finally:
        publisher.stop()
        monitor.stop()
        broker.stop()


def test_events_survive_a_daemon_restart(broker, tmp_path):
    """Stored while the broker was unreachable, sent by the next process that opens the outbox."""
    path = tmp_path / "outbox.sqlite"
    offline = MqttConfig(port=1, device="edge1")  # nothing listens there
    first = MqttPublisher(offline, Outbox(path))
    first.start()
    event_ids = [str(uuid.uuid4()) for _ in range(5)]
    for event_id in event_ids:
        first.send_event("cam0", {"event_id": event_id, "type": "alarm"})
    first.stop(timeout_s=0.5)
    first.outbox.close()
    collector = Collector(broker)
    second = MqttPublisher(mqtt_config(broker), Outbox(path))
    second.start()
    try:
        assert wait_for(lambda: len(collector.events()) == 5)
        assert [e["event_id"] for e in collector.events()] == event_ids
        assert [e["seq"] for e in collector.events()] == [1, 2, 3, 4, 5]
    finally:
        second.stop()
        collector.close()


def test_tls_with_a_ca_made_here(tmp_path):
    tls = make_tls_files(tmp_path)
    broker = Broker(tmp_path, tls=tls).start()
    collector = Collector(broker, **tls)
    publisher = start_publisher(mqtt_config(broker, ca_file=tls["ca"]), tmp_path)
    try:
        assert publisher.wait_connected(10)
        publisher.send_event("cam0", {"event_id": "tls-1", "type": "alarm"})
        assert wait_for(lambda: [e["event_id"] for e in collector.events()] == ["tls-1"])
    finally:
        publisher.stop()
        collector.close()
        broker.stop()


def test_wrong_password_is_reported_and_events_stay_in_the_outbox(tmp_path, monkeypatch):
    broker = Broker(tmp_path, password=("edge", "right-password")).start()
    monkeypatch.setenv("FALL_EDGE_MQTT_PASSWORD", "wrong-password")
    publisher = start_publisher(mqtt_config(broker, username="edge"), tmp_path)
    try:
        for index in range(3):
            publisher.send_event("cam0", {"event_id": f"e{index}", "type": "alarm"})
        assert wait_for(lambda: publisher.last_error is not None)
        assert "refused the login" in publisher.last_error and "password" in publisher.last_error
        assert wait_for(lambda: publisher.outbox.depth() == 3) and not publisher.connected
    finally:
        publisher.stop(timeout_s=0.2)
        broker.stop()
    password_file = tmp_path / "password"
    password_file.write_text("right-password\n")
    broker.start()
    retry = start_publisher(mqtt_config(broker, username="edge", password_file=str(password_file)), tmp_path)
    try:
        assert wait_for(lambda: retry.connected)
    finally:
        retry.stop()
        broker.stop()


def test_ack_from_the_monitor_stops_the_buzzer(broker, tmp_path, caplog):
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    buzzer = Buzzer(BuzzerConfig(enabled=True, pin=18), pin_factory=factory)
    config = Config()
    config.mqtt = mqtt_config(broker, snapshot_dir=str(tmp_path / "snaps"))
    publisher = start_publisher(config.mqtt, tmp_path)
    router = EventRouter(config, publisher=publisher, alarm=LocalAlarm(buzzer, None), print_events=False)
    monitor = Monitor(mqtt_config(broker), tmp_path / "monitor.sqlite", client_id="desk-1")
    monitor.start()
    try:
        assert wait_for(lambda: publisher.connected and monitor.connected.is_set())
        event = fall_event("alarm")
        router._route(event, None)
        assert buzzer.is_sounding
        assert wait_for(lambda: any(a.event_id == event.event_id for a in monitor.open_alarms.values()))
        # Garbage and unknown ids change nothing and crash nothing.
        for junk in (b"\xff\xfe", b"not-an-id", b"{\"event_id\": 5}", str(uuid.uuid4()).encode()):
            publisher._client.publish("fall/edge1/cmd/ack", junk, qos=1)
        monitor.ack(event.event_id, operator="bob")
        assert wait_for(lambda: not buzzer.is_sounding)
        assert not factory.pin(18).state
        assert wait_for(lambda: [e["type"] for e in monitor.events()] == ["alarm", "acknowledged"])
        acknowledged = monitor.events()[1]  # names what it acknowledged and who did
        assert acknowledged["acknowledges"] == event.event_id and acknowledged["operator"] == "bob"
        assert monitor.open_alarms == {}
        assert "malformed ack payload" in caplog.text and "ignored: unknown event" in caplog.text
    finally:
        publisher.stop()
        monitor.stop()
        buzzer.close()


def test_300_acks_for_one_event_give_one_acknowledged(broker, tmp_path, caplog):
    config = Config()
    config.mqtt = mqtt_config(broker, snapshot_dir=str(tmp_path / "snaps"))
    publisher = start_publisher(config.mqtt, tmp_path)
    router = EventRouter(config, publisher=publisher, print_events=False)
    collector = Collector(broker)
    try:
        assert publisher.wait_connected(10)
        fall, alarm = fall_event("fall_detected"), fall_event("alarm")
        router._route(fall, None)
        router._route(alarm, None)
        for _ in range(300):
            collector.client.publish("fall/edge1/cmd/ack", fall.event_id.encode(), qos=1)
        collector.client.publish("fall/edge1/cmd/ack", alarm.event_id.encode(), qos=1)  # same fall: closed too
        assert wait_for(lambda: len(collector.events()) >= 3)
        time.sleep(1.0)  # anything more would arrive by now
        assert [e["type"] for e in collector.events()] == ["fall_detected", "alarm", "acknowledged"]
        assert caplog.text.count("ignored: already acknowledged") == 2  # once per event id, not per ack
        # A chain that ended with the person getting up cannot be acknowledged either.
        other = fall_event("fall_detected", track_id=7)
        router._route(other, None)
        router._route(fall_event("recovered", track_id=7), None)
        collector.client.publish("fall/edge1/cmd/ack", other.event_id.encode(), qos=1)
        assert wait_for(lambda: "the person got up" in caplog.text and len(collector.events()) >= 5)
        time.sleep(1.0)
        assert [e["type"] for e in collector.events()][3:] == ["fall_detected", "recovered"]
    finally:
        publisher.stop()
        collector.close()


BAD_EVENTS = [
    b'{"event_id":"e2","type":"alarm","track_id":"abc"}',  # the message that used to stop the monitor
    b'{"event_id":"e3","type":"alarm","track_id":null}',
    b'{"event_id":"%s","type":"alarm","track_id":1,"confidence":NaN}' % str(uuid.uuid4()).encode(),
    b'{"event_id":"%s","type":"explode","track_id":1}' % str(uuid.uuid4()).encode(),
    b'{"event_id":"%s","type":"alarm","track_id":1,"device":"someone-else"}' % str(uuid.uuid4()).encode(),
    b'{"event_id":"%s","type":"alarm","track_id":true}' % str(uuid.uuid4()).encode(),
    b'[1, 2, 3]', b'\xff\xfe', b'', b'[' * 100000 + b']' * 100000,
]


def test_bad_events_and_status_are_skipped_and_the_monitor_goes_on(broker, tmp_path, caplog):
    monitor = Monitor(mqtt_config(broker), tmp_path / "monitor.sqlite", client_id="desk-2")
    monitor.start()
    sender = Collector(broker)
    try:
        assert wait_for(lambda: monitor.connected.is_set())
        for payload in BAD_EVENTS:
            for _ in range(3):  # repeated: still one line each
                sender.client.publish("fall/edge1/cam0/events", payload, qos=1)
        sender.client.publish("fall/edge1/status", b"pwned", qos=1, retain=True)
        good = fall_event("alarm")
        payload = mqtt_payload(good, "edge1", None)
        sender.client.publish("fall/edge1/cam0/events", json.dumps(payload).encode(), qos=1)
        assert wait_for(lambda: [e["event_id"] for e in monitor.events()] == [good.event_id])
        assert wait_for(lambda: monitor.skipped == 3 * len(BAD_EVENTS) + 1)
        assert monitor.open_alarms and monitor.devices() == {}
        skipped_lines = [r for r in caplog.records if "skipped" in r.getMessage()]
        assert len(skipped_lines) == len(BAD_EVENTS) + 1
        assert any("track_id has the wrong type (str)" in r.getMessage() for r in skipped_lines)
        assert any("differs from the topic" in r.getMessage() for r in skipped_lines)
    finally:
        monitor.stop()
        sender.close()
    # A restart sees the retained bad status again, and goes on all the same.
    again = Monitor(mqtt_config(broker), tmp_path / "monitor.sqlite", client_id="desk-2")
    again.start()
    try:
        assert wait_for(lambda: again.connected.is_set() and again.skipped >= 1)
        assert [e["event_id"] for e in again.events()] == [good.event_id]
    finally:
        again.stop()


def test_monitor_cli_json_and_ack(broker, tmp_path):
    publisher = start_publisher(mqtt_config(broker, device="ward-2"), tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    db = tmp_path / "monitor.sqlite"
    watcher = subprocess.Popen([sys.executable, "-m", "edge", "monitor", "--broker", f"127.0.0.1:{broker.port}",
                                "--db", str(db), "--json", "--duration", "6"], stdout=subprocess.PIPE, text=True,
                               cwd=ROOT, env=env)
    try:
        assert publisher.wait_connected(10)
        time.sleep(1.5)  # the monitor process subscribes
        event_id = str(uuid.uuid4())
        for _ in range(2):  # the same event twice (a resend): shown once
            publisher.outbox.put("fall/ward-2/cam0/events", {"event_id": event_id, "type": "alarm", "track_id": 4})
        publisher._wake.set()
        out, _ = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    events = [line for line in lines if line.get("type") == "alarm"]
    assert [e["event_id"] for e in events] == [event_id]
    assert {"type": "status", "device": "ward-2", "status": "online"} in lines
    ack = subprocess.run([sys.executable, "-m", "edge", "monitor", "--broker", f"127.0.0.1:{broker.port}",
                          "--db", str(db), "--ack", event_id], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=60)
    assert ack.returncode == 0, ack.stderr
    assert f"acknowledged {event_id} on ward-2" in ack.stderr
    unknown = subprocess.run([sys.executable, "-m", "edge", "monitor", "--broker", f"127.0.0.1:{broker.port}",
                              "--db", str(db), "--ack", str(uuid.uuid4())], capture_output=True, text=True,
                             cwd=ROOT, env=env, timeout=60)
    assert unknown.returncode == 2 and "pass --device" in unknown.stderr
    publisher.stop()


def test_health_and_test_command(broker, tmp_path, models):
    from gpiozero.pins.mock import MockFactory

    from edge.daemon.pipeline import FallPipeline

    buzzer = Buzzer(BuzzerConfig(enabled=True, pin=23), pin_factory=MockFactory())
    config = Config()
    config.mqtt = mqtt_config(broker, device="gate")
    collector = Collector(broker)
    publisher = start_publisher(config.mqtt, tmp_path)
    router = EventRouter(config, publisher=publisher, alarm=LocalAlarm(buzzer, None), print_events=False)
    pipeline = FallPipeline(config, models.pose, models.detector)
    try:
        assert publisher.wait_connected(10)
        HealthReporter(router).maybe_send([pipeline], force=True, cameras={"door": {"outages": 1, "dropped_frames": 3}})
        assert wait_for(lambda: collector.on("gate/health"))
        health = json.loads(collector.on("gate/health")[0][0])
        assert health["device"] == "gate" and health["dropped_frames"] == 3
        assert health["cameras"]["door"]["outages"] == 1
        assert {"uptime_s", "stage_fps", "outbox_depth", "outbox_dropped", "outbox_error", "alarm_problems",
                "mqtt_outages", "temperatures_c", "engines"} <= set(health)
        assert health["engines"] == {}  # CPU backends
        collector.client.publish("fall/gate/cmd/test", b"", qos=1)
        assert wait_for(lambda: buzzer.is_sounding)
    finally:
        publisher.stop()
        collector.close()
        buzzer.close()


def test_webhook_receives_each_alarm_once(broker, tmp_path):
    import http.server

    from edge.mqtt.monitor import Webhook

    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    webhook = Webhook(f"http://127.0.0.1:{server.server_address[1]}/pager")
    monitor = Monitor(mqtt_config(broker), tmp_path / "m.sqlite", client_id="pager-bridge", webhook=webhook)
    monitor.start()
    publisher = start_publisher(mqtt_config(broker), tmp_path)
    try:
        assert wait_for(lambda: monitor.connected.is_set() and publisher.connected)
        ids = {kind: str(uuid.uuid4()) for kind in ("fall_detected", "alarm", "recovered")}
        for kind in ("fall_detected", "alarm", "alarm", "recovered"):  # the alarm twice: one webhook call
            publisher.outbox.put("fall/edge1/cam0/events", {"event_id": ids[kind], "type": kind, "track_id": 1})
        publisher._wake.set()
        assert wait_for(lambda: len(monitor.events()) == 3)
        assert wait_for(lambda: webhook.delivered == 1)
        assert [r["event_id"] for r in received] == [ids["alarm"]]
    finally:
        publisher.stop()
        monitor.stop()
        webhook.close()
        server.shutdown()


def test_a_degraded_device_says_so_in_its_retained_status(broker, tmp_path, monkeypatch):
    """A bad outbox and a buzzer that cannot open show in fall/<device>/status (and so in the
    monitor) until they work again; a healthy device's status stays plain `online`."""
    from gpiozero import LED
    from gpiozero.pins.mock import MockFactory

    from edge.alarms import buzzer as buzzer_module
    from edge.alarms.buzzer import ResilientBuzzer
    from edge.mqtt import outbox as outbox_module

    monkeypatch.setattr(outbox_module, "RETRY_S", 0.0)
    monkeypatch.setattr(buzzer_module, "RETRY_S", 0.0)
    outbox_path = tmp_path / "outbox.sqlite"
    outbox_path.mkdir()  # a folder where the file should be
    factory = MockFactory()
    blocker = LED(25, pin_factory=factory)
    config = Config()
    config.mqtt = mqtt_config(broker, snapshot_dir=str(tmp_path / "snaps"))
    publisher = MqttPublisher(config.mqtt, Outbox(outbox_path))
    publisher.start()
    alarm = LocalAlarm(ResilientBuzzer(BuzzerConfig(enabled=True, pin=25), pin_factory=factory), None)
    router = EventRouter(config, publisher=publisher, alarm=alarm, print_events=False)
    monitor = Monitor(mqtt_config(broker), tmp_path / "monitor.sqlite", client_id="desk-3")
    monitor.start()
    try:
        assert wait_for(lambda: publisher.connected and monitor.connected.is_set())
        HealthReporter(router).maybe_send([], force=True)
        assert wait_for(lambda: "problems" in monitor.devices().get("edge1", ""))
        shown = monitor.devices()["edge1"]
        assert shown.startswith("online (problems: buzzer: buzzer on pin 25 cannot be opened")
        assert "outbox: the path is a folder" in shown or "outbox: cannot open the file" in shown
        outbox_path.rmdir()  # fixed on site
        blocker.close()
        router._route(fall_event("fall_detected"), None)  # the outbox opens again, the buzzer too
        health = HealthReporter(router)

        def says_online() -> bool:  # the daemon checks its problems on every frame
            health.maybe_send([])
            return monitor.devices().get("edge1") == "online"

        assert wait_for(says_online)
    finally:
        publisher.stop()
        monitor.stop()
        alarm.close()


def test_the_password_comes_from_systemds_credential_first(tmp_path, monkeypatch):
    from edge.mqtt.connection import read_password

    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mqtt.password").write_text("from-systemd\n")
    (tmp_path / "file").write_text("from-the-file\n")
    config = MqttConfig(username="edge", password_file=str(tmp_path / "file"))
    assert read_password(config) == "from-the-file"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert read_password(config) == "from-systemd"


def test_webhook_retries_a_failing_gateway_then_gives_up_with_an_error(caplog):
    """A real HTTP server that answers 503 twice, then 204: the alarm arrives on the third try.
    One that always answers 500: three tries, then one error line naming the alarm."""
    import http.server

    from edge.mqtt.monitor import Webhook

    calls = {"flaky": 0, "broken": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            self.rfile.read(int(self.headers["Content-Length"]))
            which = self.path.strip("/")
            calls[which] += 1
            ok = which == "flaky" and calls[which] >= 3
            self.send_response(204 if ok else (503 if which == "flaky" else 500))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    flaky, broken = Webhook(f"{base}/flaky"), Webhook(f"{base}/broken")
    try:
        with caplog.at_level("WARNING", logger="edge.mqtt.monitor"):
            flaky.post({"event_id": "e1", "type": "alarm"})
            broken.post({"event_id": "e2", "type": "alarm"})
            assert wait_for(lambda: flaky.delivered == 1 and broken.failed == 1, 20)
        assert calls == {"flaky": 3, "broken": 3} and flaky.failed == 0 and broken.delivered == 0
        assert "alarm e2 not delivered after 3 tries" in caplog.text and "try 2 of 3" in caplog.text
    finally:
        flaky.close()
        broken.close()
        server.shutdown()


def retained_now(broker: Broker, topic: str) -> bytes:
    """What a new subscriber gets as the retained message on topic now (b"" for none)."""
    collector = Collector(broker, topic)
    try:
        time.sleep(0.5)
        found = [payload for payload, retained in collector.on(topic) if retained]
        return found[-1] if found else b""
    finally:
        collector.close()


def test_forged_home_assistant_discovery_is_restored_and_foreign_configs_removed_while_connected(tmp_path):
    """Issue 40, defect 8: a retained config with payload_on NEVER on the device's own discovery
    topic replaced the real one and stayed until the device reconnected; a foreign config published
    while it was connected was never cleared (only retained deliveries were looked at)."""
    from broker import peer_client

    from edge.config.schema import HomeAssistantConfig
    from edge.mqtt.homeassistant import HomeAssistantBridge

    broker = Broker(tmp_path).start()
    config = Config(mqtt=mqtt_config(broker, device="ward-edge"), homeassistant=HomeAssistantConfig(enabled=True))
    publisher = MqttPublisher(config.mqtt, Outbox(tmp_path / "outbox.sqlite"))
    bridge = HomeAssistantBridge(config, publisher, {"hall": []})
    publisher.start()
    forger = peer_client(broker, "forger")
    try:
        assert wait_for(lambda: publisher.connected)
        bridge.start()
        fall_topic = next(topic for topic in bridge.configs() if topic.endswith("_fall/config"))
        # (the configs reach the broker a moment after start: wait for them, paho 1.6 took longer)
        assert wait_for(lambda: retained_now(broker, fall_topic), 10)
        ours = retained_now(broker, fall_topic)
        assert json.loads(ours)["payload_on"] == "ON"
        forged = dict(json.loads(ours), payload_on="NEVER")
        forger.publish(fall_topic, json.dumps(forged).encode(), qos=1, retain=True).wait_for_publish(5)
        assert wait_for(lambda: retained_now(broker, fall_topic) == ours, 10), "the forged config stayed"
        foreign = fall_topic.replace("_fall/config", "_backdoor/config")
        forger.publish(foreign, b'{"name": "door", "state_topic": "x"}', qos=1, retain=True).wait_for_publish(5)
        assert wait_for(lambda: retained_now(broker, foreign) == b"", 10), "the foreign config stayed"
        forger.publish(fall_topic, b"", qos=1, retain=True).wait_for_publish(5)  # removed by someone else
        assert wait_for(lambda: retained_now(broker, fall_topic) == ours, 10)
        assert publisher.connected  # no reconnection was needed for any of it
    finally:
        forger.disconnect()
        forger.loop_stop()
        publisher.stop()
        broker.stop()


def test_two_devices_with_one_name_say_so_and_do_not_flap(tmp_path, monkeypatch, caplog):
    """Issue 40, defect 5: a second device with the site's device name (a cloned SD card keeps the
    host name, the default): both took each other's session every 1.4 s forever, logging only
    "connection lost". Now both stay connected, each says in one line (and in health) that another
    device runs under its name, and the conflict clears once the other is gone."""
    import logging

    from edge.mqtt import publisher as publisher_module

    monkeypatch.setattr(publisher_module, "CLAIM_INTERVAL_S", 1.0)
    broker = Broker(tmp_path).start()
    first = MqttPublisher(mqtt_config(broker, device="ward-edge"), Outbox(tmp_path / "one.sqlite"))
    second = MqttPublisher(mqtt_config(broker, device="ward-edge"), Outbox(tmp_path / "two.sqlite"))
    try:
        with caplog.at_level(logging.WARNING):
            first.start()
            assert wait_for(lambda: first.connected)
            second.start()
            assert wait_for(lambda: first.name_conflict is not None and second.name_conflict is not None, 10)
            time.sleep(4.0)  # several claims each way
            assert first.connected and second.connected
            assert first.outages == 0 and second.outages == 0, "they took each other's connection"
        assert "give each device its own mqtt.device" in first.name_conflict
        assert caplog.text.count("another device runs as 'ward-edge'") == 2  # once each, not per claim
        assert "connection lost" not in caplog.text
        second.stop()
        assert wait_for(lambda: first.name_conflict is None, 10)  # the twin is gone
    finally:
        first.stop()
        second.stop()
        broker.stop()


_TWIN = """
import sys, time
from pathlib import Path
from edge.config import MqttConfig
from edge.mqtt.outbox import Outbox
from edge.mqtt.publisher import MqttPublisher
twin = MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=int(sys.argv[1]), device="ward-edge",
                                keepalive_s=5), Outbox(Path(sys.argv[2])))
twin.start()
print("started", flush=True)
time.sleep(60)
"""


def test_the_doctor_finds_another_device_running_under_this_name(tmp_path):
    """Issue 40, defect 5 (the doctor's part): the doctor asks on the device's instance topic who runs
    under its name; this machine's own service answers from this boot (fine), a cloned SD card's
    twin from another (its boot id differs even where the host name and machine id do not). The
    twin is a real publisher in its own process, with another boot id bound over /proc's."""
    import shutil

    import pytest

    from edge.config import Config
    from edge.doctor.checks import check_broker

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare (the twin's own boot id, bound in a mount namespace)")
    broker = Broker(tmp_path).start()
    config = Config(mqtt=mqtt_config(broker, device="ward-edge"))
    local = MqttPublisher(config.mqtt, Outbox(tmp_path / "local.sqlite"))
    local.start()
    twin = None
    try:
        assert wait_for(lambda: local.connected)
        rows = {row.what: row for row in check_broker(config)}
        assert rows["device name"].status == "ok", rows  # only this machine's own service runs as ward-edge
        fake_boot = tmp_path / "boot_id"
        fake_boot.write_text("0f0f0f0f-1111-2222-3333-444444444444\n")
        root = Path(__file__).resolve().parents[1]
        twin = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                 f"mount --bind {fake_boot} /proc/sys/kernel/random/boot_id && exec "
                                 f"{sys.executable} -c '{_TWIN}' {broker.port} {tmp_path / 'twin.sqlite'}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, PYTHONPATH=str(root)))
        assert twin.stdout.readline().strip() == "started", twin.stderr.read()
        assert wait_for(lambda: local.name_conflict is not None, 10)
        rows = {row.what: row for row in check_broker(config)}
        assert rows["device name"].status == "fail" and "another device runs as 'ward-edge'" in rows[
            "device name"].detail, rows
    finally:
        if twin is not None:
            twin.kill()
            twin.wait(timeout=10)
        local.stop()
        broker.stop()

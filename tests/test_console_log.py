"""The console's event log through a real broker: the monitor stores what devices send (events,
health, snapshots tagged with their event), and the console's queries read it back."""

import json
import uuid

import cv2
import numpy as np
from broker import Collector, wait_for
from test_mqtt import fall_event, mqtt_config

from edge.console.log import EventLog
from edge.mqtt.monitor import Monitor
from edge.mqtt.schema import snapshot_event_id, tag_snapshot


def jpeg(value: int) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((48, 64, 3), value, np.uint8))
    assert ok
    return data.tobytes()


def test_a_snapshot_names_its_event_and_stays_a_jpeg():
    event_id = str(uuid.uuid4())
    tagged = tag_snapshot(jpeg(90), event_id)
    assert snapshot_event_id(tagged) == event_id and snapshot_event_id(jpeg(90)) is None
    image = cv2.imdecode(np.frombuffer(tagged, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (48, 64, 3) and abs(int(image.mean()) - 90) <= 2  # every decoder skips the comment
    assert snapshot_event_id(b"not a jpeg") is None and snapshot_event_id(tagged[:30]) is None


def test_the_log_pages_filters_pairs_pictures_and_bounds_them(broker, tmp_path):
    monitor = Monitor(mqtt_config(broker), tmp_path / "console.sqlite", client_id="console-test", everything=True,
                      snapshot_keep=2)
    monitor.start()
    device = Collector(broker, "fall/edge1/#")  # publishes as the device would
    try:
        assert wait_for(monitor.connected.is_set)
        falls = [fall_event("fall_detected", track_id=index) for index in range(28)]
        for event in falls:
            payload = dict(event.to_dict(), device="edge1")
            device.client.publish("fall/edge1/cam0/events", json.dumps(payload), qos=1)
        recovered = fall_event("recovered", track_id=0)
        device.client.publish("fall/edge1/cam0/events", json.dumps(recovered.to_dict()), qos=1)
        acknowledged = fall_event("acknowledged", track_id=1)
        acknowledged.acknowledges, acknowledged.operator = falls[1].event_id, "alice"
        device.client.publish("fall/edge1/cam0/events", json.dumps(acknowledged.to_dict()), qos=1)
        for event in falls[:3]:
            device.client.publish("fall/edge1/cam0/snapshot", tag_snapshot(jpeg(50), event.event_id), qos=1)
        device.client.publish("fall/edge1/cam0/snapshot", jpeg(50), qos=1)  # untagged: skipped
        device.client.publish("fall/edge1/health", json.dumps({"processed_fps": 9.5, "cameras": {"cam0": {}}}),
                              qos=1)
        assert wait_for(lambda: len(monitor.events()) == 30 and monitor.skipped >= 1, timeout_s=10)
        log = EventLog(tmp_path / "console.sqlite")
        assert wait_for(lambda: log.snapshot(falls[2].event_id) is not None and log.devices())

        first, total = log.history(page=1)
        second, _ = log.history(page=2)
        assert total == 30 and len(first) == 25 and len(second) == 5
        assert {e["event_id"] for e in first} | {e["event_id"] for e in second} == {
            *(e.event_id for e in falls), recovered.event_id, acknowledged.event_id}
        only_acks, count = log.history(kind="acknowledged")
        assert count == 1 and only_acks[0]["operator"] == "alice"
        assert log.history(device="other")[1] == 0

        alarms = {alarm.event_id: alarm for alarm in log.alarms(limit=100)}
        assert alarms[falls[0].event_id].closed_by["type"] == "recovered"
        assert alarms[falls[1].event_id].closed_by["operator"] == "alice"
        assert alarms[falls[5].event_id].is_open
        assert next(iter(alarms.values())).is_open  # open ones come first
        # Pictures of people are bounded: snapshot_keep=2 keeps the newest two.
        assert log.snapshot(falls[0].event_id) is None and log.snapshot(falls[2].event_id) is not None
        assert alarms[falls[2].event_id].has_snapshot and not alarms[falls[0].event_id].has_snapshot
        (edge1,) = log.devices()
        assert edge1.health["processed_fps"] == 9.5 and [c for c, _, _ in edge1.cameras] == ["cam0"]
    finally:
        device.close()
        monitor.stop()

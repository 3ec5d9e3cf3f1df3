"""The README's broker recipe, run as written (issue 40, defect 3): configs/mosquitto.conf with
TLS, logins, configs/mosquitto.acl, persistence and the size cap, its paths and port moved into
the test's folder. A real device (publisher, Home Assistant discovery, an event's clip) logs in
as its device name; every topic it publishes must reach its reader (the control room's
`operator`, and `homeassistant`), and what the ACL must refuse is refused."""

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker import PAHO_CLIENT_ARGS, free_port, make_tls_files, wait_for
from test_mqtt import fall_event

from edge.config import Config, MqttConfig
from edge.config.schema import HomeAssistantConfig
from edge.mqtt.homeassistant import HomeAssistantBridge
from edge.mqtt.outbox import Outbox
from edge.mqtt.publisher import MqttPublisher

ROOT = Path(__file__).resolve().parents[1]
USERS = {"ward-edge": "pw-device", "operator": "pw-operator", "homeassistant": "pw-ha"}


def recipe(folder: Path, port: int, tls: dict) -> Path:
    """configs/mosquitto.conf with its paths and port pointing into folder (nothing else changed)."""
    text = (ROOT / "configs" / "mosquitto.conf").read_text()
    moved = {"listener 8883": f"listener {port} 127.0.0.1",
             "/etc/mosquitto/certs/ca.crt": tls["ca"], "/etc/mosquitto/certs/server.crt": tls["cert"],
             "/etc/mosquitto/certs/server.key": tls["key"],
             "/etc/mosquitto/fall-edge.passwd": str(folder / "passwd"),
             "/etc/mosquitto/fall-edge.acl": str(ROOT / "configs" / "mosquitto.acl"),
             "/var/lib/mosquitto/": f"{folder}/"}
    for old, new in moved.items():
        assert old in text, old
        text = text.replace(old, new)
    for index, (user, password) in enumerate(USERS.items()):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if index == 0 else []), str(folder / "passwd"), user,
                        password], check=True, capture_output=True)
    # As root, mosquitto would switch to its own user, which cannot read pytest's 0700 folders.
    conf = folder / "mosquitto.conf"
    conf.write_text(("user root\n" if os.geteuid() == 0 else "") + text
                    + f"log_dest file {folder}/mosquitto.log\n")
    return conf


class Reader:
    """A logged-in TLS subscriber that keeps every (topic, payload)."""

    def __init__(self, port: int, tls: dict, user: str, topics: list) -> None:
        self.messages: list = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(client_id=f"{user}-{uuid.uuid4().hex[:6]}", **PAHO_CLIENT_ARGS)
        self.client.username_pw_set(user, USERS[user])
        self.client.tls_set(ca_certs=tls["ca"])
        subscribed = threading.Event()
        self.client.on_connect = lambda client, *args: client.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), f"{user} could not subscribe"

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.messages.append((message.topic, message.payload))

    def topics(self) -> set:
        with self._lock:
            return {topic for topic, _ in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_broker_recipe_as_written_delivers_every_topic_to_its_reader(tmp_path):
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("mosquitto not installed (apt-get install mosquitto; .ci/run does this)")
    tls = make_tls_files(tmp_path)
    port = free_port()
    broker = subprocess.Popen(["mosquitto", "-c", str(recipe(tmp_path, port, tls))], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert broker.poll() is None and time.monotonic() < deadline, broker.stderr.read()
            time.sleep(0.05)
    (tmp_path / "device.pw").write_text(USERS["ward-edge"])
    mqtt_config = MqttConfig(enabled=True, host="127.0.0.1", port=port, device="ward-edge", username="ward-edge",
                             password_file=str(tmp_path / "device.pw"), ca_file=tls["ca"], keepalive_s=5,
                             health_interval_s=1.0)
    config = Config(mqtt=mqtt_config, homeassistant=HomeAssistantConfig(enabled=True))
    operator = Reader(port, tls, "operator", ["fall/#"])
    assistant = Reader(port, tls, "homeassistant", ["homeassistant/#", "fall/#"])
    publisher = MqttPublisher(mqtt_config, Outbox(tmp_path / "outbox.sqlite"))
    bridge = HomeAssistantBridge(config, publisher, {"ward1": []})
    publisher.start()
    try:
        assert publisher.wait_connected(15), publisher.last_error
        bridge.start()
        fall = fall_event("fall_detected", camera="ward1")
        publisher.send_event("ward1", fall.to_dict())
        bridge.on_event(fall)
        clip = {"event_id": str(uuid.uuid4()), "type": "clip", "clip_of": fall.event_id, "codec": "h264/mp4",
                "data": "AAAA" * 250_000}  # 1 MB of base64: a real clip's size
        publisher.send_clip("ward1", clip)
        publisher.send_snapshot("ward1", b"\xff\xd8 a jpeg \xff\xd9")
        publisher.send_camera_status("ward1", {"state": "online"})
        publisher.send_health({"uptime_s": 1.0})
        expected = {"fall/ward-edge/ward1/events", "fall/ward-edge/ward1/clip", "fall/ward-edge/ward1/snapshot",
                    "fall/ward-edge/ward1/status", "fall/ward-edge/status", "fall/ward-edge/health",
                    "fall/ward-edge/ward1/ha/fall", "fall/ward-edge/ward1/ha/people"}
        assert wait_for(lambda: expected <= operator.topics(), 20), expected - operator.topics()
        discovery = {topic for topic in bridge.configs()}
        assert wait_for(lambda: (expected | discovery) <= assistant.topics(), 20), \
            (expected | discovery) - assistant.topics()
        assert wait_for(lambda: publisher.outbox.depth() == 0)  # and the device deleted only what arrived
        clip_payload = next(p for t, p in operator.messages if t.endswith("/clip"))
        assert json.loads(clip_payload)["clip_of"] == fall.event_id
        # What the ACL refuses: another device's topics, and commands from anyone but the operator.
        stranger = Reader(port, tls, "homeassistant", ["fall/ward-edge/cmd/#"])
        stranger.client.publish("fall/ward-edge/cmd/ack", fall.event_id.encode(), qos=1).wait_for_publish(5)
        stranger.client.publish("fall/other/ward1/events", b"{}", qos=1).wait_for_publish(5)
        time.sleep(1.0)
        assert "fall/other/ward1/events" not in operator.topics()
        assert publisher.commands_refused == 0  # the ack never reached the device
        stranger.close()
        # A packet over max_packet_size is refused by the broker (the device's memory never sees it).
        assert re.search(r"^max_packet_size (\d+)$", (ROOT / "configs" / "mosquitto.conf").read_text(), re.M)
        flood = Reader(port, tls, "operator", ["fall/+/status"])
        flood.client.publish("fall/ward-edge/cmd/ack", b"x" * 13_000_000, qos=1)
        time.sleep(1.5)
        assert publisher.commands_refused == 0 and publisher.connected
        flood.close()
    finally:
        publisher.stop(timeout_s=2.0)
        publisher.outbox.close()
        operator.close()
        assistant.close()
        broker.terminate()
        broker.wait(timeout=10)

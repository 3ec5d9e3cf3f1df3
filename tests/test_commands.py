"""Who may command a device: signed commands, and the broker ACL shipped in configs/ (issue 10,
item 2). A real Mosquitto with passwords and that ACL."""

import json
import logging
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from broker import PAHO_CLIENT_ARGS, Broker, peer_client, wait_for

from edge.config import Config, MqttConfig
from edge.daemon.health import HealthReporter
from edge.daemon.router import EventRouter
from edge.errors import ConfigError
from edge.mqtt.commands import CommandVerifier, read_command_key, sign_command
from edge.mqtt.monitor import Monitor
from edge.mqtt.outbox import Outbox
from edge.mqtt.publisher import MqttPublisher
from edge.types import FallEvent
from edge.web.metrics import metrics_text

ROOT = Path(__file__).resolve().parents[1]
KEY = b"0123456789abcdef0123456789abcdef"
TOPIC = "fall/edge1/cmd/ack"


def test_a_signed_command_is_accepted_once_and_every_forgery_refused():
    verifier = CommandVerifier(KEY, max_age_s=30)
    now = 1_800_000_000.0
    good = sign_command(KEY, TOPIC, event_id="e1", operator="ops", now=now)
    assert verifier.check(TOPIC, good, now=now + 1) == (True, "")
    assert verifier.check(TOPIC, good, now=now + 2)[1] == "replayed (nonce already used)"
    cases = {
        "unsigned": b"e1",
        "other key": sign_command(b"another-key-of-32-bytes-for-test", TOPIC, event_id="e1", now=now),
        "other device": sign_command(KEY, "fall/edge2/cmd/ack", event_id="e1", now=now),
        "other command": sign_command(KEY, "fall/edge1/cmd/test", now=now),
        "old": sign_command(KEY, TOPIC, event_id="e1", now=now - 31),
        "from the future": sign_command(KEY, TOPIC, event_id="e1", now=now + 31),
    }
    tampered = json.loads(sign_command(KEY, TOPIC, event_id="e1", now=now))
    tampered["event_id"] = "e2"
    cases["tampered"] = json.dumps(tampered).encode()
    for name, payload in cases.items():
        ok, why = verifier.check(TOPIC, payload, now=now)
        assert not ok and why, name


def test_a_short_or_missing_key_is_a_config_error(tmp_path):
    short = tmp_path / "key"
    short.write_text("too-short\n")
    with pytest.raises(ConfigError, match="at least 16"):
        read_command_key(str(short))
    with pytest.raises(ConfigError, match="cannot be read"):
        read_command_key(str(tmp_path / "missing"))


def event(kind: str) -> FallEvent:
    return FallEvent(event_id=str(uuid.uuid4()), type=kind, camera="cam0", track_id=1, stream_time_s=3.0,
                     wall_time="2026-12-02T10:00:00.000Z", confidence=0.9, torso_angle_deg=80.0,
                     bbox=[1.0, 2.0, 3.0, 4.0], fall_started_s=2.0, started_at="2026-12-02T09:59:59.000Z",
                     detector_label="Fall")


def client_as(broker: Broker, user: str, password: str) -> mqtt.Client:
    return peer_client(broker, user, user, password)


def test_with_the_shipped_acl_a_device_cannot_ack_another_devices_alarm(tmp_path, caplog):
    key_file = tmp_path / "command.key"
    key_file.write_bytes(KEY + b"\n")
    users = {"edge1": "pw-edge1", "edge2": "pw-edge2", "operator": "pw-ops"}
    broker = Broker(tmp_path, users=users, acl_file=ROOT / "configs" / "mosquitto.acl").start()
    (tmp_path / "edge1.pw").write_text("pw-edge1")
    (tmp_path / "ops.pw").write_text("pw-ops")
    device = MqttConfig(enabled=True, port=broker.port, device="edge1", username="edge1",
                        password_file=str(tmp_path / "edge1.pw"), command_key_file=str(key_file), keepalive_s=5)
    config = Config()
    config.mqtt = device
    publisher = MqttPublisher(device, Outbox(tmp_path / "outbox.sqlite"))
    publisher.start()
    router = EventRouter(config, publisher=publisher, print_events=False)
    operator_config = MqttConfig(enabled=True, port=broker.port, username="operator",
                                 password_file=str(tmp_path / "ops.pw"), command_key_file=str(key_file))
    monitor = Monitor(operator_config, tmp_path / "monitor.sqlite", client_id="desk")
    monitor.start()
    intruder = client_as(broker, "edge2", "pw-edge2")
    try:
        assert wait_for(lambda: publisher.connected and monitor.connected.is_set())
        alarm = event("alarm")
        router._route(alarm, None)
        assert wait_for(lambda: [e["type"] for e in monitor.events()] == ["alarm"])
        # The other device: even with a valid signature, the broker drops its publish to edge1's cmd/.
        intruder.publish(TOPIC, sign_command(KEY, TOPIC, event_id=alarm.event_id), qos=1).wait_for_publish(5)
        # ... nor can it put events in edge1's name.
        fake = {"event_id": str(uuid.uuid4()), "type": "alarm", "track_id": 9, "device": "edge1", "camera": "cam0"}
        intruder.publish("fall/edge1/cam0/events", json.dumps(fake).encode(), qos=1).wait_for_publish(5)
        time.sleep(1.5)
        assert [e["type"] for e in monitor.events()] == ["alarm"]
        assert publisher.commands_refused == 0  # never even reached the device
        # An unsigned ack from the operator is refused by the device; a signed one is taken.
        operator = client_as(broker, "operator", "pw-ops")
        with caplog.at_level(logging.WARNING):
            operator.publish(TOPIC, alarm.event_id.encode(), qos=1).wait_for_publish(5)
            assert wait_for(lambda: publisher.commands_refused == 1)
            # The count goes up just before the MQTT thread logs the line: wait for the line too.
            assert wait_for(lambda: "refused: not a signed command" in caplog.text)
        operator.disconnect()
        monitor.ack(alarm.event_id)
        assert wait_for(lambda: [e["type"] for e in monitor.events()] == ["alarm", "acknowledged"])
    finally:
        intruder.disconnect()
        monitor.stop()
        publisher.stop()
        broker.stop()


# Issue 30, defect 1: payloads that once raised inside paho's network thread (and so ended it:
# no PUBACKs read, no reconnect, no later command), and a NaN ts that passed the age check.
HOSTILE_COMMANDS = {
    "non-ASCII sig": b'{"ts": 1.0, "nonce": "a", "sig": "\xc3\xa9"}',
    "surrogate in nonce": b'{"ts": 1800000000.0, "nonce": "\\ud800", "sig": "' + b"0" * 64 + b'"}',
    "surrogate in operator": b'{"ts": 1800000000.0, "nonce": "n", "operator": "\\udfff", "sig": "' + b"0" * 64 + b'"}',
    "400-digit ts": b'{"ts": ' + b"9" * 400 + b', "nonce": "n", "sig": "' + b"0" * 64 + b'"}',
    "NaN ts": b'{"ts": NaN, "nonce": "n", "sig": "' + b"0" * 64 + b'"}',
    "infinite ts": b'{"ts": -Infinity, "nonce": "n", "sig": "' + b"0" * 64 + b'"}',
    "deep nesting": b'{"ts": 1, "nonce": "n", "sig": "x", "operator": ' + b"[" * 400 + b"]" * 400 + b"}",
    "wrong types": b'{"ts": "now", "nonce": 5, "sig": null}',
    "not UTF-8": b"\xff\xfe\x00",
}


@pytest.mark.parametrize("name", list(HOSTILE_COMMANDS))
def test_a_hostile_command_is_refused_without_raising(name):
    ok, why = CommandVerifier(KEY, max_age_s=30).check(TOPIC, HOSTILE_COMMANDS[name], now=1_800_000_000.0)
    assert not ok and why


def test_a_nan_timestamp_signed_with_the_key_is_still_refused():
    """NaN compares false with everything, so `abs(now - ts) > max_age` let it through, forever."""
    payload = json.loads(sign_command(KEY, TOPIC, event_id=str(uuid.uuid4()), now=1_800_000_000.0))
    payload["ts"] = float("nan")
    ok, why = CommandVerifier(KEY, max_age_s=30).check(TOPIC, json.dumps(payload).encode(), now=1_800_000_000.0)
    assert not ok and "ts" in why


def test_hostile_commands_never_silence_a_keyed_device(tmp_path):
    """After every hostile payload on cmd/test and cmd/ack: the network thread lives, PUBACKs are
    read (delivered events leave the outbox), a signed ack still takes effect, and the device
    reconnects after a broker restart."""
    key_file = tmp_path / "command.key"
    key_file.write_bytes(KEY + b"\n")
    broker = Broker(tmp_path).start()
    device = MqttConfig(enabled=True, port=broker.port, device="edge1", command_key_file=str(key_file),
                        keepalive_s=5, reconnect_max_s=1.0)
    config = Config()
    config.mqtt = device
    publisher = MqttPublisher(device, Outbox(tmp_path / "outbox.sqlite"))
    publisher.start()
    router = EventRouter(config, publisher=publisher, print_events=False)
    attacker = mqtt.Client(client_id="attacker", **PAHO_CLIENT_ARGS)
    attacker.connect("127.0.0.1", broker.port)
    attacker.loop_start()
    try:
        assert wait_for(lambda: publisher.connected)
        for payload in HOSTILE_COMMANDS.values():
            for command in ("test", "ack"):
                attacker.publish(f"fall/edge1/cmd/{command}", payload, qos=1).wait_for_publish(5)
        assert wait_for(lambda: publisher.commands_refused == 2 * len(HOSTILE_COMMANDS))
        assert publisher._client._thread is not None and publisher._client._thread.is_alive()
        health = HealthReporter(router).report([], {})
        assert health["commands_refused"] == 2 * len(HOSTILE_COMMANDS) and health["commands_failed"] == 0
        assert f"fall_edge_commands_refused_total {2 * len(HOSTILE_COMMANDS)}.0" in metrics_text(
            lambda: health).decode()
        alarm = event("alarm")
        router._route(alarm, None)
        assert wait_for(lambda: publisher.outbox.depth() == 0)  # its PUBACK was read
        attacker.publish(TOPIC, sign_command(KEY, TOPIC, event_id=alarm.event_id, operator="ops"), qos=1)
        assert wait_for(lambda: router.events_by_type["acknowledged"] == 1)
        broker.stop()
        assert wait_for(lambda: not publisher.connected)
        broker.start()
        assert wait_for(lambda: publisher.connected, timeout_s=15)
        router._route(event("fall_detected"), None)
        assert wait_for(lambda: publisher.outbox.depth() == 0)
    finally:
        attacker.loop_stop()
        publisher.stop()
        broker.stop()


def test_a_command_is_not_accepted_again_after_the_clock_goes_back():
    """Issue 40, defect 11: the nonce of an accepted command was forgotten once its time passed; a
    clock stepped back past it (NTP on a device that booted with a wrong clock) let the very same
    signed command in again."""
    verifier = CommandVerifier(KEY, max_age_s=30)
    now = 1_800_000_000.0
    first = sign_command(KEY, TOPIC, event_id="e1", now=now)
    assert verifier.check(TOPIC, first, now=now) == (True, "")
    later = sign_command(KEY, TOPIC, event_id="e2", now=now + 60)
    assert verifier.check(TOPIC, later, now=now + 60) == (True, "")  # the first one's nonce is forgotten here
    ok, why = verifier.check(TOPIC, first, now=now + 5)  # the clock went back
    assert not ok and "replayed" in why
    fresh = sign_command(KEY, TOPIC, event_id="e3", now=now + 61)
    assert verifier.check(TOPIC, fresh, now=now + 62) == (True, "")  # newer commands still go


def test_an_oversized_command_is_refused_before_it_is_read(tmp_path):
    """Issue 40, defect 11: two 150 MB messages on cmd/ack took a device from 562 to 1011 MB (the
    unsigned ack handler decoded them). The device refuses any command over 4096 bytes unread;
    the broker recipe's max_packet_size keeps such a packet from the device altogether."""
    from edge.mqtt.publisher import MAX_COMMAND_BYTES

    broker = Broker(tmp_path).start()
    device = MqttConfig(enabled=True, port=broker.port, device="edge1", keepalive_s=5)
    publisher = MqttPublisher(device, Outbox(tmp_path / "outbox.sqlite"))
    handled = []
    publisher.on_command("ack", handled.append)
    publisher.start()
    sender = peer_client(broker, "sender")
    try:
        assert wait_for(lambda: publisher.connected)
        time.sleep(0.5)  # its subscription to cmd/ is in place
        sender.publish(TOPIC, b"x" * (MAX_COMMAND_BYTES + 1), qos=1).wait_for_publish(5)
        sender.publish(TOPIC, str(uuid.uuid4()).encode(), qos=1).wait_for_publish(5)
        assert wait_for(lambda: len(handled) == 1)
        assert publisher.commands_refused == 1 and len(handled[0]) == 36
    finally:
        sender.disconnect()
        sender.loop_stop()
        publisher.stop()
        broker.stop()

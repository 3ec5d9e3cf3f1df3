"""Connection failures are said once, in words, and their end with the outage's length and
backlog (issue 10, items 4 and 5). A real Mosquitto, real TLS files, real sockets."""

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from broker import Broker, free_port, make_tls_files, wait_for

from edge.config import MqttConfig
from edge.mqtt.monitor import Monitor
from edge.mqtt.outbox import Outbox
from edge.mqtt.publisher import MqttPublisher

ROOT = Path(__file__).resolve().parents[1]


def publisher_for(tmp_path: Path, **settings) -> MqttPublisher:
    config = MqttConfig(enabled=True, device="edge1", keepalive_s=5, reconnect_min_s=1, reconnect_max_s=1,
                        **settings)
    publisher = MqttPublisher(config, Outbox(tmp_path / f"outbox-{time.monotonic_ns()}.sqlite"))
    publisher.start()
    return publisher


def failure_lines(caplog) -> list:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "MQTT" in r.getMessage()]


def test_a_closed_port_is_reported_once_as_refused(tmp_path, caplog):
    port = free_port()
    with caplog.at_level(logging.INFO):
        publisher = publisher_for(tmp_path, host="127.0.0.1", port=port)
        publisher.send_event("cam0", {"event_id": "a", "type": "alarm"})
        time.sleep(3.5)  # three retries or more
        publisher.stop(timeout_s=0.1)
    lines = failure_lines(caplog)
    assert len(lines) == 1 and f"connection refused by 127.0.0.1:{port}" in lines[0]
    assert "1 event(s) not delivered" in caplog.text


def test_an_unknown_host_is_reported(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        publisher = publisher_for(tmp_path, host="no-such-broker.invalid", port=1883)
        assert wait_for(lambda: publisher.last_error is not None, 10)
        publisher.stop(timeout_s=0.1)
    assert "unknown host no-such-broker.invalid" in publisher.last_error


def test_plain_mqtt_to_a_tls_port_and_a_wrong_ca_are_reported(tmp_path, caplog):
    tls = make_tls_files(tmp_path)
    broker = Broker(tmp_path, tls=tls).start()
    (tmp_path / "other").mkdir()
    other_ca = make_tls_files(tmp_path / "other")
    try:
        with caplog.at_level(logging.ERROR):
            plain = publisher_for(tmp_path, host="127.0.0.1", port=broker.port)
            assert wait_for(lambda: plain.last_error is not None, 10)
            plain.stop(timeout_s=0.1)
            wrong = publisher_for(tmp_path, host="127.0.0.1", port=broker.port, ca_file=other_ca["ca"])
            assert wait_for(lambda: wrong.last_error is not None, 10)
            wrong.stop(timeout_s=0.1)
        assert "is it a TLS port" in plain.last_error
        assert "not trusted" in wrong.last_error and "mqtt.ca_file" in wrong.last_error
    finally:
        broker.stop()


def test_tls_to_a_plain_port_is_reported(tmp_path):
    broker = Broker(tmp_path).start()
    tls = make_tls_files(tmp_path)
    try:
        publisher = publisher_for(tmp_path, host="127.0.0.1", port=broker.port, ca_file=tls["ca"])
        assert wait_for(lambda: publisher.last_error is not None, 10)
        publisher.stop(timeout_s=0.1)
        assert "does not speak TLS" in publisher.last_error
    finally:
        broker.stop()


def test_an_outage_is_logged_once_and_its_end_with_length_and_backlog(tmp_path, caplog):
    """A 75 s outage with the default backoff: one error line, one line when it ends, and the
    stored events at the control room within 15 s of the broker's return. (With the old cap of
    60 s the reconnect attempts had spread out so far by then that they arrived 44.6 s late.)"""
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder).start()
    monitor = Monitor(MqttConfig(enabled=True, port=broker.port, keepalive_s=5), tmp_path / "monitor.sqlite",
                      client_id="control-room")
    monitor.start()
    config = MqttConfig(enabled=True, port=broker.port, device="edge1", keepalive_s=5)  # default backoff
    publisher = MqttPublisher(config, Outbox(tmp_path / "outbox.sqlite"))
    publisher.start()
    try:
        assert wait_for(lambda: publisher.connected and monitor.connected.is_set())
        with caplog.at_level(logging.INFO):
            broker.stop()
            assert wait_for(lambda: not publisher.connected, 10)
            for index in range(5):
                publisher.send_event("cam0", {"event_id": str(uuid.uuid4()), "type": "alarm", "track_id": index})
            time.sleep(75.0)
            broker.start()
            back_at = time.monotonic()
            assert wait_for(lambda: len(monitor.events()) == 5, 30)
            delivered_s = time.monotonic() - back_at
        print(f"events at the control room {delivered_s:.1f} s after the broker came back")
        assert delivered_s <= 15.0
        errors = failure_lines(caplog)
        assert len(errors) == 1 and "lost" in errors[0], errors
        back = [r.getMessage() for r in caplog.records if "without it" in r.getMessage()]
        assert len(back) == 1 and "sending the 5 event(s)" in back[0]
        assert 75.0 <= float(back[0].split(" after ")[1].split(" s ")[0]) < 95.0
    finally:
        publisher.stop()
        monitor.stop()
        broker.stop()


def test_monitor_with_a_wrong_ca_says_so_and_exits_1(tmp_path):
    tls = make_tls_files(tmp_path)
    broker = Broker(tmp_path, tls=tls).start()
    (tmp_path / "other").mkdir()
    other = make_tls_files(tmp_path / "other")
    try:
        result = subprocess.run([sys.executable, "-m", "edge", "monitor", "--broker", f"127.0.0.1:{broker.port}",
                                 "--ca-file", other["ca"], "--db", str(tmp_path / "m.sqlite"), "--duration", "3"],
                                capture_output=True, text=True, cwd=ROOT, timeout=60,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        broker.stop()
    assert result.returncode == 1
    assert "not trusted" in result.stderr and result.stderr.count("not trusted") <= 2

"""The service as its users run it (issue 39): fall-edge installed on a Debian 12 root by
scripts/install.sh (the PC path), booted under a real systemd (systemd-nspawn, tests/nspawn_root.py),
its unit exactly as shipped. A `replay://` camera plays a development clip with a fall in real
time; the spoken warning goes to ALSA's null device (no sound card here: the speaker is the
hardware edge). Checked from outside through the device page, systemctl and the files the unit
wrote."""

import json
import socket
import time
import urllib.request

import nspawn_root
import pytest

FALL_CLIP = "gmdcsa24_s3_fall20.mp4"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return {}


def wait_until(condition, timeout_s: float, interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval_s)
    return condition()


@pytest.fixture(scope="module")
def installed(clips_dir):
    why = nspawn_root.why_not_here()
    if why:
        pytest.skip(why)
    return nspawn_root.installed_root(print)


def test_the_installed_unit_runs_a_fall_speaks_stores_and_stops_in_time_under_systemd(installed, clips_dir,
                                                                                      tmp_path):
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"""
detector: {{type: onnxruntime, model: models/fall_yolov8s.onnx, threads: 1}}
pose: {{type: litert, model: models/movenet_multipose_lightning.tflite, threads: 1}}
speech: {{enabled: true, alsa_device: "null", second_voice: ""}}
mqtt:
  enabled: true
  host: 127.0.0.1
  port: 1
  outbox_path: /var/lib/fall-edge/outbox.sqlite
  snapshot_dir: /var/lib/fall-edge/snapshots
clip: {{dir: /var/lib/fall-edge/clips}}
output: {{http: "127.0.0.1:{port}"}}
cameras:
  - {{name: hall, source: "replay:///srv/clips/{FALL_CLIP}"}}
""")
    config.chmod(0o644)
    binds = [f"{config}:/etc/fall-edge/config.yaml", f"{clips_dir}:/srv/clips"]
    with nspawn_root.Booted(installed, "fall-edge-systemd-test", binds) as box:
        assert box.systemctl("start", "fall-edge").returncode == 0, box.run("journalctl", "-u", "fall-edge",
                                                                             "--no-pager").stdout[-3000:]
        state = box.show("fall-edge.service", "ActiveState", "SubState", "Type")
        assert state == {"ActiveState": "active", "SubState": "running", "Type": "notify"}  # READY=1 came

        # A fall on the replayed clip: stored, spoken (under the unit's sandbox), a clip written.
        report = wait_until(lambda: (lambda h: h if h.get("events", {}).get("fall_detected") else None)(
            health(port)), 120)
        assert report, box.run("journalctl", "-u", "fall-edge", "--no-pager").stdout[-3000:]
        spoken = wait_until(lambda: (lambda h: h if h.get("speech_spoken") else None)(health(port)), 60)
        assert spoken and "speech" not in spoken["alarm_problems"], spoken
        clips = wait_until(lambda: box.run("sh", "-c", "ls /var/lib/fall-edge/clips/*.mp4").stdout.split(), 60)
        assert clips, box.run("journalctl", "-u", "fall-edge", "--no-pager").stdout[-3000:]
        # Still running past WatchdogSec (30 s) after READY: the frame loop pets the watchdog.
        time.sleep(max(0.0, 35.0 - float(report.get("uptime_s", 0.0))))
        assert box.show("fall-edge.service", "ActiveState", "NRestarts") == {"ActiveState": "active",
                                                                            "NRestarts": "0"}

        # A crash (SIGKILL) is restarted by systemd.
        main_pid = box.show("fall-edge.service", "MainPID")["MainPID"]
        box.run("kill", "-9", main_pid)
        assert wait_until(lambda: box.show("fall-edge.service", "NRestarts", "ActiveState", "SubState") ==
                          {"NRestarts": "1", "ActiveState": "active", "SubState": "running"}, 90)

        # `systemctl stop` ends within TimeoutStopSec with every event stored.
        assert wait_until(lambda: health(port).get("events", {}).get("fall_detected"), 120)
        started = time.monotonic()
        assert box.systemctl("stop", "fall-edge").returncode == 0
        stop_s = time.monotonic() - started
        assert stop_s < 20.0, stop_s
        assert box.show("fall-edge.service", "Result")["Result"] == "success"  # not killed at the timeout
        stored = box.run("/opt/fall-edge/.venv/bin/python", "-c",
                         "from pathlib import Path; from edge.mqtt.outbox import Outbox; "
                         "o = Outbox(Path('/var/lib/fall-edge/outbox.sqlite')); "
                         "print(sorted({r.payload['type'] for r in o.pending()}))").stdout
        assert "fall_detected" in stored, stored
        owner = box.run("stat", "-c", "%U %a", "/var/lib/fall-edge/outbox.sqlite").stdout.split()
        assert owner == ["fall-edge", "600"]

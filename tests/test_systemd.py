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
    # The doctor's config for the sandbox check: clips in /var/tmp, which anyone may write outside the
    # unit and nobody inside it (ProtectSystem=strict without PrivateTmp).
    read_only = tmp_path / "doctor-ro.yaml"
    read_only.write_text("speech: {enabled: true, alsa_device: 'null'}\nmqtt: {enabled: false}\n"
                         "clip: {dir: /var/tmp/fall-edge-clips}\n")
    read_only.chmod(0o644)
    binds = [f"{config}:/etc/fall-edge/config.yaml", f"{clips_dir}:/srv/clips", f"{read_only}:/srv/doctor-ro.yaml"]
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

        # The device policy is enforced: a device node outside DeviceAllow= opens for the service's user
        # outside the unit, and is refused inside the unit's cgroup.
        probe = ("import os\ntry:\n os.close(os.open('/dev/fall-edge-probe', os.O_RDWR)); print('opened')\n"
                 "except OSError as exc: print('refused', exc.errno)")
        box.run("sh", "-c", "mknod /dev/fall-edge-probe c 10 200 && chmod 666 /dev/fall-edge-probe")
        outside = box.run("runuser", "-u", "fall-edge", "--", "python3", "-c", probe).stdout.split()
        cgroup = "/sys/fs/cgroup" + box.show("fall-edge.service", "ControlGroup")["ControlGroup"]
        inside = box.run("sh", "-c", f"echo $$ > {cgroup}/cgroup.procs && exec runuser -u fall-edge -- python3 -c "
                                     f"\"{probe}\"").stdout.split()
        assert outside == ["opened"] and inside == ["refused", "1"], (outside, inside)  # EPERM

        # The doctor inside the unit's sandbox sees what the service sees; as its user outside, it cannot.
        doctor = ["/opt/fall-edge/.venv/bin/fall-edge", "doctor", "--only", "disk,sound"]
        sandboxed = box.run(*doctor, "--as-service", "--config", "/etc/fall-edge/config.yaml", timeout=120)
        assert sandboxed.returncode == 0, sandboxed.stdout + sandboxed.stderr
        assert "/run/fall-edge-doctor writable" in sandboxed.stdout and "played on null" in sandboxed.stdout
        confined = box.run(*doctor, "--as-service", "--config", "/srv/doctor-ro.yaml", timeout=120)
        assert confined.returncode == 1 and "/var/tmp/fall-edge-clips: Read-only file system" in confined.stdout, \
            confined.stdout + confined.stderr
        loose = box.run("runuser", "-u", "fall-edge", "--", *doctor, "--config", "/srv/doctor-ro.yaml", timeout=120)
        assert loose.returncode == 0, loose.stdout  # outside the sandbox the same folder looked fine

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

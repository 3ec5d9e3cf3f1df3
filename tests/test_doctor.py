"""`fall-edge doctor` on this machine: real models, a real clip as the camera, a real broker."""

import os
import subprocess
import sys
from pathlib import Path

from broker import Broker, free_port

ROOT = Path(__file__).resolve().parents[1]


def doctor(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", "doctor", "--config", str(config)], capture_output=True,
                          text=True, cwd=ROOT, timeout=180, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def rows(result: subprocess.CompletedProcess) -> dict:
    lines = result.stdout.splitlines()
    column = lines[0].index("status")
    table = {}
    for line in lines[1:-1]:
        what, rest = line[:column].strip(), line[column:].split(None, 1)
        table[what] = (rest[0], rest[1] if len(rest) > 1 else "")
    return table


def test_doctor_on_this_machine(tmp_path, clips_dir):
    folder = tmp_path / "broker"
    folder.mkdir()
    broker = Broker(folder).start()
    config = tmp_path / "config.yaml"
    config.write_text(f"cameras:\n  - {{name: door, source: {clips_dir / 'gmdcsa24_s3_fall20.mp4'}}}\n"
                      f"mqtt:\n  enabled: true\n  port: {broker.port}\n  outbox_path: {tmp_path}/outbox.sqlite\n"
                      f"buzzer:\n  enabled: true\n  pin_factory: mock\n")
    try:
        result = doctor(config)
    finally:
        broker.stop()
    print(result.stdout)
    table = rows(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert table["models"][0] == "ok" and "loaded in" in table["models"][1]
    assert table["camera door"] == ("ok", "640x480 at 15 fps")
    assert table["broker"][0] == "ok" and f"127.0.0.1:{broker.port} accepted" in table["broker"][1]
    assert table["buzzer"][0] == "ok" and table["outbox disk"][0] == "ok"
    assert table["tensorrt"] == ("ok", "not on this machine")
    assert "0 failed" in result.stdout.splitlines()[-1]


def test_doctor_fails_with_the_reason_and_exit_1(tmp_path):
    config = tmp_path / "config.yaml"
    port = free_port()
    config.write_text(f"cameras:\n  - {{name: door, source: {tmp_path / 'missing.mp4'}}}\n"
                      f"mqtt:\n  enabled: true\n  port: {port}\n  outbox_path: {tmp_path}/outbox.sqlite\n"
                      "speech:\n  enabled: true\n  command: espeak-ng-not-installed\n")
    result = doctor(config)
    table = rows(result)
    assert result.returncode == 1
    assert table["camera door"][0] == "fail"
    assert table["broker"][0] == "fail" and f"connection refused by 127.0.0.1:{port}" in table["broker"][1]
    assert table["speech engine"][0] == "fail" and "apt-get install espeak-ng" in table["speech engine"][1]
    assert "Traceback" not in result.stderr

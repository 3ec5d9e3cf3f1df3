"""Home Assistant end to end (issue 31): a real Home Assistant (PyPI's `homeassistant`, in its own
venv on the Python it needs: scripts/bootstrap.sh --dev makes .ha-venv), its MQTT integration
set up through its own config flow against a real Mosquitto, and the real daemon on a real clip.
Entity states are read through Home Assistant's REST API."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from broker import Broker, free_port, wait_for

ROOT = Path(__file__).resolve().parents[1]
HA_PYTHON = Path(os.environ.get("FALL_EDGE_HA_PYTHON", ROOT / ".ha-venv" / "bin" / "python"))
WILD_CLIPS_DIR = ROOT.parent / "shared" / "clips-wild"
# Falls at about 0.8 s, is found lying at 0.9 s and is back on his feet by 5.6 s (eval's events).
FALL_AND_UP = "f_toni_walkway5.mp4"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


class HomeAssistant:
    """Home Assistant in a fresh config folder: onboarded over its API, MQTT added by config flow."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        folder.mkdir()
        (folder / "configuration.yaml").write_text(
            "homeassistant:\n  name: fall-edge test\n  latitude: 37.5\n  longitude: 127.0\n  elevation: 0\n"
            "  unit_system: metric\n  time_zone: UTC\n  country: KR\n  currency: KRW\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.port}\napi:\nonboarding:\nconfig:\n")
        self.log = open(folder / "ha.log", "wb")
        self.process = subprocess.Popen([str(HA_PYTHON), "-m", "homeassistant", "--config", str(folder),
                                         "--skip-pip"], stdout=self.log, stderr=subprocess.STDOUT)
        self.token = ""

    def _call(self, path: str, body=None, form: bool = False):
        data = None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if body is not None:
            data = urllib.parse.urlencode(body).encode() if form else json.dumps(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded" if form else "application/json"
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
        return raw if path.startswith("/api/image_proxy") else json.loads(raw)

    def set_up(self, broker_port: int) -> None:
        def up() -> bool:
            assert self.process.poll() is None, (self.folder / "ha.log").read_text()[-3000:]
            try:
                return bool(self._call("/api/onboarding"))
            except (urllib.error.URLError, ConnectionError, ValueError):
                return False

        assert wait_for(up, timeout_s=120, interval_s=0.5), "Home Assistant did not come up"
        client = self.base + "/"
        code = self._call("/api/onboarding/users", {"client_id": client, "name": "Installer", "username": "installer",
                                                     "password": "fall-edge test password", "language": "en"})
        self.token = self._call("/auth/token", {"grant_type": "authorization_code", "code": code["auth_code"],
                                                "client_id": client}, form=True)["access_token"]
        flow = self._call("/api/config/config_entries/flow", {"handler": "mqtt", "show_advanced_options": False})
        done = self._call(f"/api/config/config_entries/flow/{flow['flow_id']}",
                          {"broker": "127.0.0.1", "port": broker_port})
        assert done["type"] == "create_entry", done

    def state(self, entity_id: str):
        try:
            return self._call(f"/api/states/{entity_id}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def daemon(tmp_path: Path, broker: Broker, camera: str, source: Path, *extra: str) -> subprocess.Popen:
    config = tmp_path / f"{camera}.yaml"
    config.write_text(json.dumps({
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port, "device": "edge1",
                 "outbox_path": str(tmp_path / "outbox.sqlite"), "snapshot_dir": str(tmp_path / "snapshots"),
                 "health_interval_s": 1.0},
        "homeassistant": {"enabled": True},
        "clip": {"dir": str(tmp_path / "clips")},
        "cameras": [{"name": camera, "source": str(source),
                     "zones": [{"name": "kerb", "kind": "danger",
                                "polygon": [[0.0, 0.0], [0.2, 0.0], [0.2, 0.2], [0.0, 0.2]]}]}]}))
    return subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config), "--source", str(source),
                             "--camera", camera, "--realtime", *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_home_assistant_sees_a_fall_turn_on_and_off_and_the_device_go_offline(tmp_path):
    if not HA_PYTHON.is_file():
        pytest.skip(f"no Home Assistant venv at {HA_PYTHON} (scripts/bootstrap.sh --dev makes .ha-venv)")
    if not (WILD_CLIPS_DIR / FALL_AND_UP).is_file():
        pytest.skip(f"development clips not found at {WILD_CLIPS_DIR}")
    broker = Broker(tmp_path).start()
    ha = HomeAssistant(tmp_path / "ha")
    runs = []
    try:
        ha.set_up(broker.port)
        fall = "binary_sensor.fall_edge_edge1_hall_fall"
        run = daemon(tmp_path, broker, "hall", WILD_CLIPS_DIR / FALL_AND_UP, "--pad-end", "3")
        runs.append(run)
        seen = []
        people = []
        jpeg = b""
        deadline = time.monotonic() + 60
        while run.poll() is None and time.monotonic() < deadline:
            state = ha.state(fall)
            if state is not None and (not seen or seen[-1] != state["state"]):
                seen.append(state["state"])
            count = ha.state("sensor.fall_edge_edge1_hall_people")
            if count is not None and count["state"].isdigit():
                people.append(int(count["state"]))
            image = ha.state("image.fall_edge_edge1_hall_snapshot")
            if not jpeg and seen[-1:] == ["on"] and image is not None and image["state"] not in ("unknown",
                                                                                                "unavailable"):
                # The fall's snapshot, through Home Assistant's own image proxy.
                jpeg = ha._call("/api/image_proxy/image.fall_edge_edge1_hall_snapshot")
            time.sleep(0.1)
        out, err = run.communicate(timeout=30)
        assert run.returncode == 0, err
        events = [json.loads(line)["type"] for line in out.splitlines() if line.startswith("{")]
        assert events[0] == "fall_detected" and "recovered" in events, events
        # Discovered (unavailable until the device's status says online), off, on at the fall, off
        # when he got up, unavailable once the daemon stopped.
        while seen and seen[0] == "unavailable":
            seen.pop(0)
        assert seen[:3] == ["off", "on", "off"], seen
        assert max(people) >= 1
        state = ha.state(fall)
        assert state["attributes"]["device_class"] == "safety"
        zone = ha.state("binary_sensor.fall_edge_edge1_hall_zone_kerb")
        assert zone is not None
        assert jpeg[:2] == b"\xff\xd8", "the fall's snapshot was never shown by the image entity"
        # The daemon stopped (its status says offline): every entity of the device is unavailable.
        assert wait_for(lambda: ha.state(fall)["state"] == "unavailable", timeout_s=15)
        assert ha.state("sensor.fall_edge_edge1_hall_people")["state"] == "unavailable"

        # The camera is renamed: the next run's discovery removes the old camera's entities.
        if VTEST.is_file():
            renamed = daemon(tmp_path, broker, "hall2", VTEST)
            runs.append(renamed)
            # (Home Assistant removes the old entities one config message at a time: wait for all)
            assert wait_for(lambda: ha.state("binary_sensor.fall_edge_edge1_hall2_fall") is not None
                            and ha.state(fall) is None and ha.state("sensor.fall_edge_edge1_hall_people") is None
                            and ha.state("image.fall_edge_edge1_hall_snapshot") is None, timeout_s=40)
    finally:
        for run in runs:
            if run.poll() is None:
                run.terminate()
                run.communicate(timeout=30)
        ha.stop()
        broker.stop()

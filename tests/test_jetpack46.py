"""What pip gives JetPack 4.6 (Python 3.6) where it differs from here: paho-mqtt 1.6 (2.x needs
3.7) and gpiozero 1.6 (2.x imports importlib.metadata, 3.8).

The MQTT tests (daemon to a real Mosquitto, TLS, wrong password, outage, acks, ACL) and the
alarm tests (buzzer on gpiozero's mock pins, the Jetson pin factory) run again in a child
pytest with paho-mqtt 1.6.1 and gpiozero 1.6.2 first on the path; scripts/bootstrap.sh --dev
puts them in .venv/jetpack46.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JETPACK46 = Path(sys.prefix) / "jetpack46"


def _with_jetpack46_packages() -> dict:
    for package in ("paho/mqtt/client.py", "gpiozero/pins/pi.py"):
        if not (JETPACK46 / package).is_file():
            pytest.fail(f"{package} not found in {JETPACK46}: scripts/bootstrap.sh --dev installs it there")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(JETPACK46), os.environ.get("PYTHONPATH", "")]))


def _run(args: list, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=_with_jetpack46_packages(), cwd=str(ROOT),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=timeout)


def test_the_versions_are_jetpack_46s_and_the_client_is_built_for_paho_16():
    probe = ("import paho.mqtt, gpiozero, edge.mqtt.connection as c; from edge.config import MqttConfig; "
             "client = c.make_client(MqttConfig(), 'probe'); print(paho.mqtt.__version__, c.PAHO_2, gpiozero.__file__)")
    result = _run(["-c", probe], 60)
    assert result.returncode == 0, result.stdout
    paho, paho_2, gpiozero = result.stdout.split()
    assert (paho, paho_2) == ("1.6.1", "False") and gpiozero.startswith(str(JETPACK46))


def test_the_mqtt_and_alarm_tests_pass_with_jetpack_46s_packages():
    tests = ["tests/test_mqtt.py", "tests/test_mqtt_failures.py", "tests/test_commands.py", "tests/test_alarms.py",
             "-k", "not installed_gpiozero"]  # that one asks for this machine's gpiozero 2.x
    result = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], 1200)
    assert result.returncode == 0, result.stdout[-6000:]
    assert " passed" in result.stdout.splitlines()[-1], result.stdout[-2000:]

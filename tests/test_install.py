"""scripts/install.sh --dry-run: the plan for each JetPack, checked without root or a Jetson."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--dry-run", *args], capture_output=True,
                          text=True, timeout=60)


def commands(result: subprocess.CompletedProcess) -> list:
    return [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("jetpack, python", [("5", "python3.8"), ("6", "python3.10")])
def test_the_install_plan_for_each_jetpack(jetpack, python):
    result = plan("--jetpack", jetpack)
    assert result.returncode == 0, result.stderr
    steps = commands(result)
    apt = next(step for step in steps if "apt-get install" in step).split()
    for package in ("python3-venv", "python3-dev", "build-essential", "python3-libnvinfer", "python3-gi",
                    "gstreamer1.0-tools", "gstreamer1.0-plugins-bad", "gstreamer1.0-libav", "espeak-ng",
                    "alsa-utils"):
        assert package in apt, package
    assert f"{python} -m venv --system-site-packages /opt/fall-edge/.venv" in steps
    pip = next(step for step in steps if "pip install" in step and "-e" in step.split())
    constraints = ROOT / "scripts" / "constraints" / f"jetpack-{jetpack}.txt"
    assert f"-c {constraints}" in pip and pip.endswith("-e /opt/fall-edge[jetson]")  # no [cpu] on a Jetson
    assert "numpy<2" in constraints.read_text().splitlines()
    assert "useradd --system --home-dir /var/lib/fall-edge --shell /usr/sbin/nologin --user-group fall-edge" in steps
    usermod = next(i for i, step in enumerate(steps) if step.startswith("usermod -aG video,gpio,audio"))
    assert steps.index("groupadd -f --system gpio") < usermod  # the gpio group exists before it is given
    assert any(step.startswith("install -m 0640 -o root -g fall-edge") and step.endswith("/etc/fall-edge/config.yaml")
               for step in steps)
    assert "install -m 0600 -o fall-edge -g fall-edge /dev/null /etc/fall-edge/mqtt.password" in steps
    assert "install -m 0644 " + str(ROOT / "systemd" / "fall-edge.service") + \
        " /etc/systemd/system/fall-edge.service" in steps
    assert steps[-2] == "systemctl enable --now fall-edge.service"
    assert steps[-1] == "/opt/fall-edge/.venv/bin/fall-edge doctor --config /etc/fall-edge/config.yaml"


def test_uninstall_keeps_the_outbox_and_engines_unless_purged():
    kept = commands(plan("--jetpack", "6", "--uninstall"))
    assert "systemctl disable --now fall-edge.service" in kept and not any("/var/lib/fall-edge" in s for s in kept)
    purged = commands(plan("--jetpack", "6", "--uninstall", "--purge"))
    assert "rm -rf /var/lib/fall-edge /etc/fall-edge /opt/fall-edge" in purged


def test_the_nano_and_a_non_jetson_are_refused_with_the_reason():
    nano = plan("--jetpack", "4.6")
    assert nano.returncode == 1 and "Python 3.6" in nano.stderr and commands(nano) == []
    here = plan()
    assert here.returncode == 1 and "not a Jetson" in here.stderr and "--jetpack" in here.stderr

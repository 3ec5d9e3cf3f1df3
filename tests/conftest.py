"""Shared fixtures: the real models (loaded once), real images and real clips."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture.opencv_source import iter_video_frames
from edge.config import Config
from edge.daemon.runner import Models, load_models
from edge.decoding.letterbox import square_crop_box
from edge.errors import ModelError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CLIPS_DIR = PROJECT_ROOT.parent / "shared" / "clips"
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


# Test tiers (issue 42): the markers of whole test modules, stated once. CI runs everything; the
# inner loop runs the fast tier: pytest -m "not slow and not install and not browser".
TIERS = {
    "slow": "over a minute, or a real-time run",
    "install": "installs into fresh venvs or Debian roots (qemu, debootstrap, systemd-nspawn)",
    "browser": "drives Chromium",
}
MODULE_TIERS = {
    "test_arm64_install": ("install", "slow"),
    "test_real_install": ("install", "slow"),
    "test_systemd": ("install", "slow"),
    "test_python36": ("install", "slow"),
    "test_jetpack46": ("install",),
    "test_homeassistant": ("browser", "slow"),
    "test_console": ("browser",),
    "test_hostile_harness": ("browser", "slow"),
    "test_device_page": ("browser",),
    "test_delivery_soak": ("slow",),
    "test_mqtt_failures": ("slow",),
    "test_multicamera": ("slow",),
    "test_eval": ("slow",),
    "test_eval_cache": ("slow",),
    "test_variants": ("slow",),
}


def pytest_configure(config) -> None:
    for name, meaning in TIERS.items():
        config.addinivalue_line("markers", f"{name}: {meaning}")


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        for tier in MODULE_TIERS.get(item.module.__name__ if item.module else "", ()):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session", autouse=True)
def _private_cache_home(tmp_path_factory):
    """`fall-edge eval` caches model outputs under $XDG_CACHE_HOME: tests keep theirs apart from
    the user's cache (and start empty), and eval workers inherit it."""
    import os

    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto for one test (tests/broker.py)."""
    from broker import Broker

    folder = tmp_path / "broker"
    folder.mkdir()
    running = Broker(folder).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def models() -> Models:
    try:
        return load_models(Config())
    except ModelError as exc:
        pytest.fail(f"{exc} (scripts/bootstrap.sh does this)")


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    if not (CLIPS_DIR / "MANIFEST.tsv").is_file():
        pytest.skip(f"development clips not found at {CLIPS_DIR}")
    return CLIPS_DIR


@pytest.fixture(scope="session")
def vtest_frames() -> list:
    """The first 120 frames of OpenCV's sample clip: real people walking, small in the frame."""
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} missing: apt-get install opencv-doc (scripts/bootstrap.sh does this)")
    frames = list(itertools.islice(iter_video_frames(VTEST), 120))
    assert len(frames) == 120
    return frames


@pytest.fixture(scope="session")
def vtest_person_crops(models: Models, vtest_frames: list) -> list:
    """256x256 crops around the people the detector finds in vtest's first frame."""
    from edge.daemon.pipeline import person_boxes

    frame = vtest_frames[0]
    boxes = person_boxes(models.detector.detect(frame), models.detector.fall_class_id)
    crops = []
    for detection in boxes:
        if detection.label != "Normal":
            continue
        region = square_crop_box(detection.box, 0.35, frame.shape[1], frame.shape[0])
        crop = frame[int(region.y1):int(region.y2), int(region.x1):int(region.x2)]
        crops.append(cv2.resize(crop, (256, 256), interpolation=cv2.INTER_LINEAR))
    assert len(crops) >= 3, "the detector should find at least three walking people in vtest's first frame"
    return crops


def skimage_bgr(name: str) -> np.ndarray:
    data = pytest.importorskip("skimage.data")
    image = getattr(data, name)()
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image


def run_daemon_on_clip(config: Path, clip: Path) -> subprocess.CompletedProcess:
    """`fall-edge run --config CONFIG --source CLIP --pad-end 4` as a child process, as installed."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(config), "--source", str(clip),
                           "--pad-end", "4"], capture_output=True, text=True, cwd=root, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(root)))


def stand_in(tmp_path: Path, monkeypatch, name: str, script: str) -> Path:
    """An executable `name` (a shell script) first on PATH for this test: a stand-in for a hardware
    edge (a sound device, a wedged hardware encoder). Returns its file."""
    import stat

    fake = tmp_path / "bin" / name
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    return fake

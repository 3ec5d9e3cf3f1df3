"""`fall-edge doctor` on this machine: real models, a real clip as the camera, a real broker."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from broker import Broker, free_port

ROOT = Path(__file__).resolve().parents[1]


def doctor(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", "doctor", "--config", str(config), *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=180,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


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
    assert table["gpu"] == ("ok", "not on this machine (the CPU backends need none)")
    assert table["engines"] == ("ok", "not on this machine: the CPU backends need none")
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


def test_doctor_reads_engine_sidecars_and_never_builds(tmp_path):
    """A Jetson config on this machine: a missing engine with build.source is a warning (the service
    builds it), and the doctor does not start that build; an engine with its sidecar is described;
    one without a sidecar fails with the rebuild command; TensorRT and the GPU fail with the fix."""
    from edge.backends.sidecar import EngineInfo, write_sidecar

    detector = tmp_path / "fall_detector_int8.engine"
    detector.write_bytes(b"engine bytes")
    write_sidecar(detector, EngineInfo(
        engine_file=str(detector), source_file="models/fall_yolov8s.onnx", source_sha256="ab" * 32,
        onnx_sha256="cd" * 32, kind="yolo", precision="fp16", requested_precision="int8", input_name="images",
        input_shape=[1, 3, 640, 640], output_names=["output0"], tensorrt_version="8.2.1.8",
        device_name="NVIDIA Tegra X1", compute_capability="5.3", built_at="2026-12-04T18:00:00Z",
        notes=["no fast INT8 on this GPU: built FP16"]))
    pose = tmp_path / "pose_fp16.engine"
    weights = tmp_path / "resnet18.pth"
    weights.write_bytes(b"trt_pose weights")  # torch imports here: the build could run
    config = tmp_path / "config.yaml"
    base = (f"detector:\n  type: tensorrt\n  model: {detector}\n"
            f"pose:\n  type: tensorrt\n  model: {pose}\n  input_size: 224\n  build:\n    source: {weights}\n"
            f"    precision: fp16\n")
    config.write_text(base)
    table = rows(doctor(config))
    assert table["tensorrt"] == ("fail", "not importable  -> apt-get install python3-libnvinfer; use a "
                                         "--system-site-packages venv")
    assert table["gpu"][0] == "fail" and "pycuda" in table["gpu"][1]
    assert "python3-pycuda" not in table["gpu"][1] and "/usr/local/cuda/bin" in table["gpu"][1]
    assert table["engine detector"][0] == "warning"
    assert table["engine detector"][1].startswith(
        "fall_detector_int8.engine: yolo fp16 [1, 3, 640, 640] TensorRT 8.2.1.8 on NVIDIA Tegra X1 (sm 5.3)")
    assert table["engine pose"][0] == "warning" and "not built yet" in table["engine pose"][1]
    assert f"the service builds it from {weights}" in table["engine pose"][1]
    assert table["models"] == ("warning", "not loaded: the pose engine is not built yet (above)")
    assert not pose.exists()  # no build was started

    # A source that is not there fails: the service's first start could only fail into the start limit
    weights.unlink()
    table = rows(doctor(config))
    assert table["engine pose"] == ("fail", f"{pose} not built, and cannot be at the start: build.source {weights} "
                                            f"not found: put the weights there (README, \"Deploy on a Jetson\")")
    weights.write_bytes(b"trt_pose weights")

    (tmp_path / "fall_detector_int8.engine.json").unlink()
    config.write_text(base.replace(f"    source: {weights}\n", ""))
    table = rows(doctor(config))
    assert table["engine detector"][0] == "fail" and "has no fall_detector_int8.engine.json" in \
        table["engine detector"][1]
    assert table["engine pose"][0] == "fail" and "fall-edge build-engines" in table["engine pose"][1]


def test_sandbox_problems_name_what_the_unit_hides_from_the_service():
    """The unit's effective settings (systemctl show) against what the config needs: the argus
    socket for CSI cameras, writable /sys for Jetson.GPIO's sysfs pins, and devices left open."""
    from edge.doctor.checks import sandbox_problems

    shipped = {"PrivateTmp": "no", "ProtectKernelTunables": "no", "ProtectClock": "yes", "ProtectKernelLogs": "yes",
               "DevicePolicy": "closed"}  # the unit with install.sh's DeviceAllow= drop-in
    assert sandbox_problems(shipped, csi_cameras=True, jetson_buzzer=True) == []
    old = {"PrivateTmp": "yes", "ProtectKernelTunables": "yes", "ProtectClock": "yes", "ProtectKernelLogs": "yes",
           "DevicePolicy": "auto"}  # the unit before, installed with --no-device-allow
    problems = sandbox_problems(old, csi_cameras=True, jetson_buzzer=True)
    assert [p.split(" ")[0] for p in problems] == ["PrivateTmp=yes", "ProtectKernelTunables=yes", "ProtectClock"]
    assert "/tmp/argus_socket" in problems[0] and "ProtectClock and ProtectKernelLogs=yes" in problems[2]
    assert sandbox_problems(old, csi_cameras=False, jetson_buzzer=False) == [problems[2]]


def test_argus_problem_tells_a_missing_dead_and_answering_socket_apart(tmp_path):
    import socket

    from edge.doctor.checks import argus_problem

    path = tmp_path / "argus_socket"
    assert "is missing: nvargus-daemon is not running" in argus_problem(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    assert "does not answer" in argus_problem(path)  # bound, not listening: a daemon that died
    server.listen(1)
    try:
        assert argus_problem(path) is None
    finally:
        server.close()


def test_the_doctor_measures_a_live_cameras_frame_rate(tmp_path):
    """Issue 41, defect 7: `doctor` reported "640x480 at 15 fps" for a 10 fps stream (it printed
    capture.fps, what was asked). A real RTSP camera at 10 fps, capture.fps 15: measured."""
    import re

    from test_gst_capture import SYSTEM_PYTHON, start_rtsp_server

    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("python3-gi with gir1.2-gst-rtsp-server-1.0 missing (.ci/run installs them)")
    port = free_port()
    server = start_rtsp_server(port, fps=10)
    config = tmp_path / "config.yaml"
    config.write_text(f"cameras:\n  - {{name: door, source: 'rtsp://127.0.0.1:{port}/test'}}\n"
                      "capture: {width: 320, height: 240, fps: 15}\nmqtt: {enabled: false}\n")
    try:
        result = doctor(config, "--only", "cameras")
    finally:
        server.kill()
        server.wait(timeout=10)
    status, detail = rows(result)["camera door"]
    assert status == "ok", result.stdout + result.stderr
    rate = float(re.match(r"320x240 at ([\d.]+) fps \(measured over 3 s\)", detail).group(1))
    assert 8.5 <= rate <= 11.5, detail

"""systemd's notify protocol on a real unix datagram socket: READY, watchdog pings from the
frame loop (and none once it hangs), STATUS, STOPPING on SIGTERM (issue 11, service part)."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from broker import wait_for

from edge.config import Config
from edge.daemon.app import RunOptions, run_one_camera
from edge.daemon.notify import FrameLoopNotifier, SystemdNotifier
from edge.daemon.router import EventRouter
from edge.daemon.runner import Models

ROOT = Path(__file__).resolve().parents[1]


class NotifyListener:
    """What systemd would receive: every datagram on the socket, with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.2)
        self.messages = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(4096)
            except socket.timeout:
                continue
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str = "") -> list:
        return [line for _, line in self.messages if line.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.socket.close()


def test_ready_watchdog_status_and_stopping_from_the_daemon(tmp_path, clips_dir):
    listener = NotifyListener(tmp_path / "notify.sock")
    env = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=str(tmp_path / "notify.sock"),
               WATCHDOG_USEC="1000000")
    daemon = subprocess.Popen([sys.executable, "-m", "edge", "run", "--source",
                               str(clips_dir / "gmdcsa24_s3_fall20.mp4"), "--realtime"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: len(listener.lines("WATCHDOG=1")) >= 3, 120)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert wait_for(lambda: "STOPPING=1" in listener.lines(), 5)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        listener.close()
    lines = listener.lines()
    assert lines.index("READY=1") < lines.index("WATCHDOG=1")  # pings only once ready
    assert any(line.startswith("STATUS=detecting: cam0") and "frames/s" in line for line in lines)
    assert lines[-2:] == ["STOPPING=1", "STATUS=stopping"]


class HangingPose:
    """The real pose model, which stops answering after `frames` calls (a stuck GPU call)."""

    def __init__(self, pose, frames: int) -> None:
        self.pose, self.frames = pose, frames
        self.hung = threading.Event()
        self.release = threading.Event()

    def estimate(self, image):
        self.frames -= 1
        if self.frames <= 0:
            self.hung.set()
            self.release.wait(30)
        return self.pose.estimate(image)

    def __getattr__(self, name):
        return getattr(self.pose, name)


def test_watchdog_pings_stop_when_the_frame_loop_hangs(tmp_path, clips_dir, models):
    listener = NotifyListener(tmp_path / "notify.sock")
    hanging = HangingPose(models.pose, frames=15)
    notifier = FrameLoopNotifier(SystemdNotifier({"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "200000"}),
                                 {"cam0"})
    config = Config()
    router = EventRouter(config, print_events=False)
    worker = threading.Thread(target=run_one_camera, args=(config, Models(hanging, models.detector), router, "cam0",
                                                           str(clips_dir / "gmdcsa24_s3_fall20.mp4"),
                                                           RunOptions(realtime=True), notifier), daemon=True)
    worker.start()
    try:
        assert hanging.hung.wait(60)
        hung_at = time.monotonic()
        pings_before = len(listener.lines("WATCHDOG=1"))
        time.sleep(1.5)  # 15 ping periods
        late = [t for t, line in listener.messages if line == "WATCHDOG=1" and t > hung_at + 0.3]
        assert pings_before >= 3 and late == []
    finally:
        hanging.release.set()
        worker.join(timeout=60)
        listener.close()


def test_the_service_unit_verifies_with_its_drop_ins_and_is_hardened(tmp_path):
    """systemd-analyze verify on the shipped unit with the drop-ins install.sh writes (JetPack 4.6's
    environment, DeviceAllow=), ExecStart pointed at this checkout's CLI; and its offline security
    exposure stays low (9.2 UNSAFE for the unit before issue 11)."""
    import re
    import shutil

    import pytest
    from test_install import plan, written

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    text = (ROOT / "systemd" / "fall-edge.service").read_text()
    for directive in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=on-failure",
                      "RestartPreventExitStatus=2", "StateDirectory=fall-edge", "NoNewPrivileges=yes",
                      "CapabilityBoundingSet=", "SystemCallErrorNumber=EPERM"):
        assert directive in text.splitlines(), directive
    units = tmp_path / "units"
    (units / "fall-edge.service.d").mkdir(parents=True)
    (units / "fall-edge.service").write_text(
        text.replace("/opt/fall-edge/.venv/bin/fall-edge", str(Path(sys.executable).parent / "fall-edge")))
    shutil.copy(ROOT / "systemd" / "jetpack-4.6.conf", units / "fall-edge.service.d" / "jetpack-4.6.conf")
    devices = written(plan("--jetpack", "4.6"), "/etc/systemd/system/fall-edge.service.d/devices.conf")
    (units / "fall-edge.service.d" / "devices.conf").write_text("\n".join(devices) + "\n")
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{units}:")
    result = subprocess.run(["systemd-analyze", "verify", "fall-edge.service"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0 and "fall-edge.service" not in result.stdout + result.stderr, result.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "fall-edge.service"],
                              capture_output=True, text=True, timeout=60, env=env)
    if "--offline" in security.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd 250+")
    exposure = float(re.search(r"Overall exposure level for fall-edge.service: ([\d.]+)", security.stdout).group(1))
    assert exposure <= 2.0, security.stdout[-3000:]
    assert "char-alsa:rw" in security.stdout  # the DeviceAllow= drop-in was read with the unit


def test_the_console_unit_verifies_and_is_hardened(tmp_path):
    """The control-room console's unit: systemd-analyze verify, and a low offline exposure (a web
    server needs no devices, privileges or code generation)."""
    import re
    import shutil

    import pytest

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    units = tmp_path / "units"
    units.mkdir()
    text = (ROOT / "systemd" / "fall-edge-console.service").read_text()
    (units / "fall-edge-console.service").write_text(
        text.replace("/opt/fall-edge/.venv/bin/fall-edge", str(Path(sys.executable).parent / "fall-edge")))
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{units}:")
    result = subprocess.run(["systemd-analyze", "verify", "fall-edge-console.service"], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 0 and "fall-edge-console.service" not in result.stdout + result.stderr, \
        result.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "fall-edge-console.service"],
                              capture_output=True, text=True, timeout=60, env=env)
    if "--offline" in security.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd 250+")
    found = re.search(r"Overall exposure level for fall-edge-console.service: ([\d.]+)", security.stdout)
    assert found and float(found.group(1)) <= 2.0, security.stdout[-3000:]


def test_a_camera_that_is_away_keeps_the_service_ready_and_the_watchdog_fed(tmp_path):
    """The camera cannot be reached: the capture worker says so and keeps retrying; restarting
    the service would not help (and in a loop would hit systemd's start limit), so READY comes
    and the pings go on while every camera is offline."""
    import functools

    import pytest
    from broker import free_port

    from edge.capture.gst_readers import reader_available
    from edge.capture.gst_source import GstSource
    from edge.capture.uri import parse_uri

    if reader_available("appsink") and reader_available("gst-launch"):
        pytest.skip("needs a GStreamer reader")
    listener = NotifyListener(tmp_path / "notify.sock")
    notifier = FrameLoopNotifier(SystemdNotifier({"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000"}),
                                 {"door"})
    source = GstSource(parse_uri(f"rtsp://127.0.0.1:{free_port()}/stream"), 64, 48, 10, reconnect_min_s=0.2,
                       reconnect_max_s=0.5, on_status=functools.partial(notifier.camera_status, "door"))
    try:
        with source:
            threading.Thread(target=lambda: next(iter(source.frames()), None), daemon=True).start()
            assert wait_for(lambda: "READY=1" in listener.lines(), 20)
            ready_at = time.monotonic()
            time.sleep(1.5)
            pings = [t for t, line in listener.messages if line == "WATCHDOG=1" and t > ready_at]
            assert len(pings) >= 4  # every 0.2 s, from the ticker
            assert any("door offline" in line for line in listener.lines("STATUS="))
    finally:
        notifier.stopping()
        listener.close()


def test_a_long_start_up_step_keeps_pushing_the_start_timeout_out(tmp_path, monkeypatch):
    """Issue 39, defect 7: a first-start engine build on a Nano could outrun TimeoutStartSec=30min
    and the restart began the build from zero. While the step runs, EXTEND_TIMEOUT_USEC (systemd
    236+) pushes the timeout out every EXTEND_EVERY_S, with a STATUS saying why; after it, nothing."""
    from edge.daemon import notify

    monkeypatch.setattr(notify, "EXTEND_EVERY_S", 0.2)
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(listener.path)})
        with notify.extending_start_timeout("building the pose engine (minutes, once)", notifier):
            time.sleep(1.0)
        assert wait_for(lambda: len(listener.lines("EXTEND_TIMEOUT_USEC=")) >= 4, 5)
        sent = len(listener.lines("EXTEND_TIMEOUT_USEC="))
        assert set(listener.lines("EXTEND_TIMEOUT_USEC=")) == {"EXTEND_TIMEOUT_USEC=180000000"}
        assert listener.lines("STATUS=")[0] == "STATUS=building the pose engine (minutes, once) (0 min so far)"
        time.sleep(0.5)
        assert len(listener.lines("EXTEND_TIMEOUT_USEC=")) == sent  # none once the step is over
    finally:
        listener.close()
    with notify.extending_start_timeout("nothing", SystemdNotifier({})):  # outside systemd: nothing at all
        pass

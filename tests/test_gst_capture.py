"""GStreamer capture: pipeline strings, real frames from test://, an mp4, a stalled TCP source,
and an RTSP camera that goes away for 5 s and comes back."""

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from broker import free_port, wait_for

from edge.capture import open_source
from edge.capture.gst_readers import READERS, ReaderUnavailableError, make_reader, pick_reader, reader_available
from edge.capture.gst_source import GstSource
from edge.capture.uri import build_pipeline, parse_uri
from edge.config import CaptureConfig
from edge.errors import SourceError

needs_gst = pytest.mark.skipif(shutil.which("gst-launch-1.0") is None,
                               reason="gst-launch-1.0 missing (apt-get install gstreamer1.0-tools; .ci/run does this)")
SYSTEM_PYTHON = "/usr/bin/python3"


def _reader_param(kind):
    problem = reader_available(kind)
    return pytest.param(kind, marks=pytest.mark.skipif(bool(problem), reason=f"{kind} reader: {problem}"))


# Every reader this machine can run (opencv-gst needs a cv2 built with GStreamer, as JetPack's is).
each_reader = pytest.mark.parametrize("reader", [_reader_param(kind) for kind in READERS])


def test_uris():
    assert parse_uri("0").location == "/dev/video0" and parse_uri("0").kind == "v4l2"
    assert parse_uri("csi://1").location == "1"
    assert parse_uri("v4l2:///dev/video2").location == "/dev/video2"
    assert parse_uri("clip.mp4").kind == "file" and parse_uri("file:///a/b.mp4").location == "/a/b.mp4"
    assert parse_uri("gst:videotestsrc ! fakesink").location == "videotestsrc ! fakesink"
    assert parse_uri("test://").is_live and parse_uri("rtsp://h/s").is_live and not parse_uri("x.mp4").is_live
    bad_sources = (("http://cam/x", "unknown source scheme"), ("csi://front", "csi://<sensor id>"), ("", "empty"))
    for bad, message in bad_sources:
        with pytest.raises(SourceError, match=message):
            parse_uri(bad)


@pytest.mark.parametrize("jetson", [False, True])
def test_pipelines_per_platform(jetson, tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    rtsp = build_pipeline(parse_uri("rtsp://u:p@cam/live"), 640, 480, 15, jetson)
    v4l2 = build_pipeline(parse_uri("v4l2:///dev/video0"), 640, 480, 15, jetson)
    file = build_pipeline(parse_uri(str(clip)), 1280, 720, 10, jetson)
    for text in (rtsp, v4l2, file):
        assert text.endswith("video/x-raw,format=BGR,width=640,height=480") or text.endswith(
            "video/x-raw,format=BGR,width=1280,height=720")
    assert "rtspsrc location=rtsp://u:p@cam/live" in rtsp and "! decodebin !" in rtsp  # H.264 or H.265
    assert "videorate" not in rtsp and "framerate" not in file
    if jetson:
        assert "decodebin ! nvvidconv" in rtsp and "nvvidconv ! video/x-raw,format=BGRx" in v4l2
        csi = build_pipeline(parse_uri("csi://0"), 1280, 720, 30, True)
        assert csi.startswith("nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,"
                              "framerate=30/1 ! nvvidconv")
        assert "qtdemux ! h264parse ! nvv4l2decoder" in file
    else:
        assert "v4l2src device=/dev/video0 ! capsfilter" in v4l2 and "decodebin" in file
        with pytest.raises(SourceError, match="need a Jetson"):
            build_pipeline(parse_uri("csi://0"), 640, 480, 15, False)


@needs_gst
@each_reader
def test_test_source_frames_have_size_order_and_clock(reader):
    with GstSource(parse_uri("test://"), 320, 240, 20, reader=reader) as source:
        assert source.reader == reader
        frames = []
        while len(frames) < 15:
            frame = source.poll(timeout_s=2.0)
            assert frame is not None
            frames.append(frame)
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    indexes = [f.index for f in frames]
    assert indexes == sorted(indexes) and len(set(indexes)) == 15
    clock = [f.time_s for f in frames]  # a live source's clock: seconds since it opened
    assert clock == sorted(clock) and len(set(clock)) == 15 and clock[-1] - clock[0] > 0.4  # 15 frames at 20 fps


def make_mp4(path: Path, count: int, width=320, height=240) -> None:
    """Frames of rising brightness, H.264 in MP4, made with openh264enc."""
    raw = path.with_suffix(".bgr")
    raw.write_bytes(b"".join(np.full((height, width, 3), 10 + i * 6, np.uint8).tobytes() for i in range(count)))
    subprocess.run(["gst-launch-1.0", "-q", "filesrc", f"location={raw}", "!", "rawvideoparse", f"width={width}",
                    f"height={height}", "format=bgr", "framerate=10/1", "!", "videoconvert", "!", "openh264enc",
                    "bitrate=2000000", "!", "h264parse", "!", "mp4mux", "!", "filesink", f"location={path}"],
                   check=True, capture_output=True, timeout=60)


@needs_gst
@each_reader
def test_mp4_file_gives_every_frame_in_order(tmp_path, reader):
    clip = tmp_path / "ramp.mp4"
    make_mp4(clip, 30)
    with open_source(f"file://{clip}", CaptureConfig(width=160, height=120, fps=10, reader=reader)) as source:
        assert isinstance(source, GstSource) and not source.is_live
        frames = list(source.frames())
    assert len(frames) == 30
    assert frames[0].image.shape == (120, 160, 3)
    brightness = [float(f.image.mean()) for f in frames]
    assert all(b > a for a, b in zip(brightness, brightness[1:]))  # the order survived
    assert [round(f.time_s, 2) for f in frames[:3]] == [0.0, 0.1, 0.2]


@needs_gst
@each_reader
def test_corrupt_file_is_a_clear_error(tmp_path, reader):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01" * 5000)
    with open_source(f"file://{junk}", CaptureConfig(reader=reader)) as source:
        with pytest.raises(SourceError, match="cannot be read"):
            list(source.frames())


@each_reader
def test_a_missing_element_is_a_clear_error(reader):
    with GstSource(parse_uri("gst:nosuchsrc num-buffers=3"), 64, 48, 10, reader=reader) as source:
        with pytest.raises(SourceError, match="cannot be read.*(nosuchsrc|erroneous pipeline|could not)"):
            list(source.frames())


@pytest.mark.parametrize("reader", [_reader_param("appsink"), _reader_param("opencv-gst")])
def test_frames_of_the_wrong_size_end_the_run(reader):
    """A pipeline whose frames are not the configured size ends the run with the reason (the
    source then restarts it); the models never see a wrongly shaped frame."""
    run = make_reader(reader, "videotestsrc num-buffers=5 ! video/x-raw,format=BGR,width=64,height=48",
                      32, 24, live=False)
    run.start()
    assert run.read() is None
    assert "expected 32x24 BGR (2304 bytes)" in run.finish()


def test_asking_for_a_reader_this_machine_lacks_names_the_fix():
    for kind in READERS:
        problem = reader_available(kind)
        if problem:
            with pytest.raises(ReaderUnavailableError, match=f"capture.reader {kind}: .*install"):
                pick_reader(kind)
            with pytest.raises(SourceError, match="install"):
                GstSource(parse_uri("test://"), 64, 48, 10, reader=kind)
        else:
            assert pick_reader(kind) == kind
    assert pick_reader("auto") == next(kind for kind in READERS if not reader_available(kind))


class RawFrameServer:
    """Sends raw 64x48 BGR frames over TCP, and can go silent without closing (a stall)."""

    def __init__(self):
        self.port = free_port()
        self.sending = threading.Event()
        self.sending.set()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._send, args=(connection,), daemon=True).start()

    def _send(self, connection):
        frame = np.full((48, 64, 3), 128, np.uint8).tobytes()
        try:
            while True:
                if self.sending.is_set():
                    connection.sendall(frame)
                time.sleep(0.05)
        except OSError:
            connection.close()


@needs_gst
@each_reader
def test_a_stalled_source_is_detected_and_restarted(reader):
    server = RawFrameServer()
    statuses = []
    spec = parse_uri(f"gst:tcpclientsrc host=127.0.0.1 port={server.port} ! rawvideoparse width=64 height=48 "
                     f"format=bgr framerate=20/1")
    with GstSource(spec, 64, 48, 20, stall_timeout_s=1.5, reconnect_min_s=0.2, reconnect_max_s=0.5,
                   on_status=lambda status, reason: statuses.append((time.monotonic(), status, reason)),
                   reader=reader) as source:
        assert wait_for(lambda: source.poll(0.5) is not None, 10)
        server.sending.clear()  # the camera goes quiet but keeps the connection open
        went_quiet = time.monotonic()
        assert wait_for(lambda: any(s == "offline" for _, s, _ in statuses), 10)
        detected_after = next(t for t, s, _ in statuses if s == "offline") - went_quiet
        assert 1.0 <= detected_after <= 3.5
        assert "stalled" in next(r for _, s, r in statuses if s == "offline")
        server.sending.set()
        assert wait_for(lambda: statuses[-1][1] == "online" and source.poll(0.5) is not None, 10)
        assert source.outages == 1 and server.connections >= 2
    server.listener.close()


def start_rtsp_server(port: int, codec: str = "h264", fps: int = 15) -> subprocess.Popen:
    process = subprocess.Popen([SYSTEM_PYTHON, str(Path(__file__).parent / "rtsp_server.py"), str(port), codec,
                                str(fps)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if "ready" not in line:
        process.kill()
        pytest.skip(f"RTSP server did not start: {process.stderr.read()[-300:]}")
    return process


@needs_gst
@each_reader
def test_rtsp_camera_goes_away_and_comes_back(tmp_path, reader):
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("python3-gi with gir1.2-gst-rtsp-server-1.0 missing (.ci/run installs them)")
    port = free_port()
    server = start_rtsp_server(port)
    statuses = []
    config = CaptureConfig(width=320, height=240, fps=10, stall_timeout_s=3.0, reconnect_min_s=0.5,
                           reconnect_max_s=2.0, reader=reader)
    try:
        with open_source(f"rtsp://127.0.0.1:{port}/test", config, name="door",
                         on_status=lambda status, reason: statuses.append(status)) as source:
            assert wait_for(lambda: source.poll(0.5) is not None, 20)
            server.kill()
            server.wait()
            time.sleep(5.0)  # the camera is away for 5 s
            assert statuses[-1] == "offline"
            server = start_rtsp_server(port)
            assert wait_for(lambda: source.poll(0.5) is not None and statuses[-1] == "online", 30)
            frames = [source.poll(1.0) for _ in range(5)]
            assert all(f is not None and f.image.shape == (240, 320, 3) for f in frames)
            assert source.outages == 1
            assert statuses.count("offline") == 1
    finally:
        server.kill()


@needs_gst
def test_two_cameras_share_one_inference_loop(tmp_path):
    config = tmp_path / "two.yaml"
    config.write_text("cameras:\n"
                      "  - {name: left, source: 'gst:videotestsrc num-buffers=30 pattern=ball'}\n"
                      "  - {name: right, source: 'gst:videotestsrc num-buffers=20 pattern=snow'}\n"
                      "output:\n  process_fps: 0\n")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "edge", "run", "--config", str(config)], capture_output=True,
                            text=True, cwd=root, timeout=300, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "50 frames processed" in result.stderr


@needs_gst
def test_camera_outage_reaches_the_control_room(tmp_path):
    """A stalled camera under the daemon: retained camera status and the health counters over MQTT."""
    import os
    import signal

    from broker import Broker, Collector

    broker = Broker(tmp_path).start()
    collector = Collector(broker)
    server = RawFrameServer()
    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  port: {broker.port}\n  device: site\n  health_interval_s: 0.5\n"
                      f"  outbox_path: {tmp_path}/outbox.sqlite\n"
                      f"capture:\n  width: 64\n  height: 48\n  stall_timeout_s: 1.5\n  reconnect_min_s: 0.2\n"
                      f"  reconnect_max_s: 0.5\n"
                      f"cameras:\n  - {{name: dock, source: 'gst:tcpclientsrc host=127.0.0.1 port={server.port} ! "
                      f"rawvideoparse width=64 height=48 format=bgr framerate=20/1'}}\n"
                      f"detector:\n  enabled: false\n")
    root = Path(__file__).resolve().parents[1]
    daemon = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config)], cwd=root,
                              env=dict(os.environ, PYTHONPATH=str(root)), stderr=subprocess.PIPE, text=True)
    try:
        def statuses():
            return [json.loads(p)["status"] for p, _ in collector.on("site/dock/status")]

        assert wait_for(lambda: statuses()[-1:] == ["online"], 60)
        server.sending.clear()
        assert wait_for(lambda: statuses()[-1:] == ["offline"], 15)
        server.sending.set()
        assert wait_for(lambda: statuses()[-1:] == ["online"], 15)

        def outages():
            reports = [json.loads(p) for p, _ in collector.on("site/health")]
            return reports[-1]["cameras"]["dock"]["outages"] if reports else None

        assert wait_for(lambda: outages() == 1, 10)
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, stderr
        assert wait_for(lambda: [p for p, _ in collector.on("site/status")][-1:] == [b"offline"])
    finally:
        daemon.kill()
        collector.close()
        server.listener.close()
        broker.stop()


def _command_lines() -> list:
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" "))
        except OSError:
            continue
    return lines


def test_a_camera_password_never_appears_in_a_child_process_command_line():
    """gst-launch-1.0 would carry the RTSP URL, password and all, in its argv (readable by every
    user with ps): a source with credentials is read in-process instead."""
    if reader_available("gst-launch") or (reader_available("appsink") and reader_available("opencv-gst")):
        pytest.skip("needs gst-launch-1.0 and an in-process reader")
    secret = f"s3cret-pw-{free_port()}"
    spec = parse_uri(f"rtsp://viewer:{secret}@127.0.0.1:{free_port()}/stream")
    source = GstSource(spec, 64, 48, 10, reader="gst-launch", stall_timeout_s=1.0, reconnect_min_s=0.2,
                       reconnect_max_s=0.5)
    assert source.reader in ("appsink", "opencv-gst")
    seen = []
    with source:
        worker = threading.Thread(target=lambda: next(iter(source.frames()), None), daemon=True)
        worker.start()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            seen += [line for line in _command_lines() if secret.encode() in line]
            time.sleep(0.05)
    assert seen == []


@needs_gst
@each_reader
@pytest.mark.parametrize("camera, expected_fps", [
    ("videotestsrc is-live=true", 15),  # has the configured mode: asked for it
    ("videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1", 30),  # has not: its own
])
def test_usb_camera_pipeline_asks_for_the_configured_mode_and_falls_back(reader, camera, expected_fps):
    """v4l2src without caps takes the camera's first mode (capture.fps ignored). The USB pipeline
    asks for the configured size and rate (raw, then MJPEG), else takes any mode; a live test
    source stands in for the camera, which this machine does not have."""
    usb = build_pipeline(parse_uri("v4l2:///dev/video0"), 640, 480, 15, False)
    stand_in = usb.replace("v4l2src device=/dev/video0", camera)
    assert stand_in != usb
    with GstSource(parse_uri("gst:" + stand_in), 640, 480, 15, reader=reader) as source:
        frames = [source.poll(5.0) for _ in range(int(expected_fps) + 1)]
    assert all(f is not None and f.image.shape == (480, 640, 3) for f in frames)
    elapsed = frames[-1].time_s - frames[0].time_s
    rate = (len(frames) - 1) / elapsed
    assert abs(rate - expected_fps) < expected_fps * 0.3, rate


@needs_gst
def test_h265_rtsp_camera_gives_frames(tmp_path):
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                           capture_output=True)
    if probe.returncode != 0 or shutil.which("gst-inspect-1.0") is None or subprocess.run(
            ["gst-inspect-1.0", "x265enc"], capture_output=True).returncode != 0:
        pytest.skip("python3-gi with gir1.2-gst-rtsp-server-1.0, or x265enc, missing")
    port = free_port()
    server = start_rtsp_server(port, "h265")
    try:
        config = CaptureConfig(width=320, height=240, fps=10)
        with open_source(f"rtsp://127.0.0.1:{port}/test", config, name="h265") as source:
            assert wait_for(lambda: source.poll(0.5) is not None, 20)
            frames = [source.poll(2.0) for _ in range(5)]
        assert all(f is not None and f.image.shape == (240, 320, 3) for f in frames)
        assert max(float(f.image.std()) for f in frames) > 10  # a picture, not a blank frame
    finally:
        server.kill()

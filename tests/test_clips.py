"""Event clips (issue 31): a real run on a development clip with a fall writes a clip of the
seconds before and after it, which decodes back to the frames that were kept; privacy mode
leaves only the drawing; a clip over the size cap stays on the device and says so."""

import base64
from dataclasses import replace

import cv2
import numpy as np
import pytest

from edge.clips.encode import encode_clip, h264_encoder
from edge.clips.recorder import ClipService
from edge.config import ClipConfig, Config
from edge.daemon.app import RunOptions, run_one_camera
from edge.daemon.router import EventRouter
from edge.types import EventType

FALL_CLIP = "gmdcsa24_s1_fall15.mp4"  # falls at about 2.5 s and stays down (MANIFEST.tsv)


def decoded(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def run_with_clips(tmp_path, clips_dir, models, **clip):
    config = Config(clip=ClipConfig(dir=str(tmp_path / "clips"), **clip))
    router = EventRouter(config, print_events=False)
    sent = []
    router.clips.send = lambda camera, payload: sent.append((camera, payload))
    run_one_camera(config, models, router, "ward1", str(clips_dir / FALL_CLIP), RunOptions(pad_end_s=6.0))
    router.close()
    return router, sent


def test_a_fall_gives_a_clip_of_the_seconds_before_and_after_it(tmp_path, clips_dir, models):
    router, sent = run_with_clips(tmp_path, clips_dir, models)
    assert router.events_by_type["fall_detected"] == 1
    assert len(sent) == 1
    camera, payload = sent[0]
    assert camera == "ward1" and payload["event_type"] == EventType.FALL_DETECTED.value
    assert payload["codec"] == ("h264/mp4" if h264_encoder() else "vp8/webm")
    folder = tmp_path / "clips"
    files = list(folder.iterdir())
    assert [f.name for f in files] == [payload["file"]]
    assert folder.stat().st_mode & 0o777 == 0o700 and files[0].stat().st_mode & 0o777 == 0o600
    # 5 s before the fall (the clip starts 2.5 s in: the fall is 2.5 s after the stream's start)
    # and 5 s after, at 10 frames a second.
    assert 1.5 <= payload["pre_s"] <= 5.0
    assert payload["frames"] == pytest.approx(10 * (payload["pre_s"] + 5.0), abs=2)
    frames = decoded(files[0])
    assert len(frames) == payload["frames"]
    assert frames[0].shape == (payload["height"], payload["width"], 3) and payload["width"] == 640
    assert base64.b64decode(payload["data"]) == files[0].read_bytes()
    assert not payload["kept_on_device"] and payload["reason"] is None
    # Drawn like --save-video: a red FALL banner top left after the fall, not before it.
    def red(frame):
        patch = frame[10:40, 10:90].astype(int)
        return int(((patch[..., 2] > 150) & (patch[..., 1] < 90) & (patch[..., 0] < 90)).sum())
    fall_index = int(payload["pre_s"] * 10)
    assert red(frames[fall_index + 5]) > 30 and red(frames[0]) < 5


def test_privacy_mode_clips_show_only_the_drawing_and_large_clips_stay_on_the_device(tmp_path, clips_dir, models):
    config = Config(clip=ClipConfig(dir=str(tmp_path / "clips"), max_send_bytes=1000))
    config = replace(config, mqtt=replace(config.mqtt, snapshot_privacy=True))
    router = EventRouter(config, print_events=False)
    sent = []
    router.clips.send = lambda camera, payload: sent.append(payload)
    run_one_camera(config, models, router, "ward1", str(clips_dir / FALL_CLIP), RunOptions(pad_end_s=6.0))
    router.close()
    (payload,) = sent
    assert payload["kept_on_device"] and payload["data"] is None
    assert "over clip.max_send_bytes" in payload["reason"] and payload["file"] in payload["reason"]
    frames = decoded(tmp_path / "clips" / payload["file"])
    # skeletons, boxes and labels on black: most of every frame is black
    dark = [float((frame.max(axis=2) < 40).mean()) for frame in frames]
    assert min(dark) > 0.85


def test_the_ring_buffer_is_bounded_by_pre_s(tmp_path):
    """Memory per camera is pre_s * fps frames at clip.width, whatever the stream's length."""
    from edge.types import Frame, FrameResult

    service = ClipService(ClipConfig(dir=str(tmp_path), pre_s=2.0, fps=10.0, width=640), False, None)
    image = np.zeros((720, 1280, 3), np.uint8)
    for index in range(300):  # 30 s at 10 fps
        service.offer(FrameResult(frame=Frame(image, index, index / 10.0), tracks=[], events=[], detector_ran=False,
                                  camera="cam0"))
    assert service.memory_bytes() <= 21 * 640 * 360 * 3
    service.close()


def test_the_encoder_writes_what_it_was_given(tmp_path):
    frames = [np.full((360, 640, 3), (i * 8) % 256, np.uint8) for i in range(30)]
    for frame, i in zip(frames, range(30)):
        cv2.putText(frame, str(i), (200, 200), cv2.FONT_HERSHEY_SIMPLEX, 4, (255, 255, 255), 8)
    path, codec = encode_clip(frames, 10.0, tmp_path / "x")
    back = decoded(path)
    assert len(back) == 30 and back[0].shape == frames[0].shape
    # lossy, but each frame is the one written there (mean brightness steps by 8 each frame)
    means = [float(f.mean()) for f in back]
    assert all(abs(a - float(b.mean())) < 6 for a, b in zip(means, frames))


def hanging_encoder(tmp_path, monkeypatch):
    """A gst-launch-1.0 that never reads its input and never exits (a wedged hardware encoder),
    first on PATH; its process id is written where the test can check it was killed."""
    from conftest import stand_in

    if h264_encoder() is None:
        pytest.skip("no GStreamer H.264 encoder here (scripts/bootstrap.sh installs one)")
    pids = tmp_path / "encoder.pids"
    stand_in(tmp_path, monkeypatch, "gst-launch-1.0", f"echo $$ >> {pids}\nexec sleep 600\n")
    return pids


def gone(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as handle:  # a zombie not yet reaped by its parent is gone too
        return handle.read().split(") ")[1].startswith("Z")


def test_a_hung_encoder_is_killed_at_its_deadline_and_leaves_no_file(tmp_path, monkeypatch):
    """Issue 40, defect 4: a gst-launch-1.0 that never exits stopped every later clip in silence
    (the write to its stdin blocked forever) and was left running."""
    import time

    from edge.clips import encode

    pids = hanging_encoder(tmp_path, monkeypatch)
    monkeypatch.setattr(encode, "_ENCODE_BASE_S", 1.0)
    monkeypatch.setattr(encode, "_ENCODE_PER_FRAME_S", 0.01)
    frames = [np.zeros((360, 640, 3), np.uint8)] * 30  # 20 MB: far more than a pipe holds
    started = time.monotonic()
    with pytest.raises(OSError, match="hung: killed after"):
        encode_clip(frames, 10.0, tmp_path / "x")
    assert time.monotonic() - started < 5.0
    assert not list(tmp_path.glob("x.*"))  # no partial clip
    assert all(gone(int(pid)) for pid in pids.read_text().split())


def test_a_stop_with_a_hung_encoder_fits_the_units_stop_timeout_with_every_event_stored(tmp_path, monkeypatch,
                                                                                        clips_dir):
    """Issue 40, defect 4: close() waited 60 s for a hung encoder, past the unit's
    TimeoutStopSec=20, so systemd would SIGKILL the daemon before the publisher's last save. The
    real daemon on a fall clip, the broker down, the encoder hung: the run ends within the stop
    budget after its last frame, both events stored, the encoder killed, and the log says so."""
    import re
    import time

    from conftest import run_daemon_on_clip

    from edge.mqtt.outbox import Outbox

    pids = hanging_encoder(tmp_path, monkeypatch)
    config = tmp_path / "config.yaml"
    config.write_text(f"mqtt:\n  enabled: true\n  port: 1\n  outbox_path: {tmp_path}/outbox.sqlite\n"
                      f"  snapshot_dir: {tmp_path}/snaps\nclip:\n  dir: {tmp_path}/clips\n")
    started = time.monotonic()
    result = run_daemon_on_clip(config, clips_dir / "gmdcsa24_s3_fall20.mp4")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "the writer did not finish within 8 s of the stop" in result.stderr
    stored = [row.payload["type"] for row in Outbox(tmp_path / "outbox.sqlite").pending()]
    assert stored == ["fall_detected", "alarm"]  # the events; the clip was given up
    assert all(gone(int(pid)) for pid in pids.read_text().split())
    assert not list((tmp_path / "clips").glob("*.mp4"))
    frames_s = float(re.search(r"frames processed in ([\d.]+) s", result.stderr).group(1))
    assert took - frames_s < 20.0, (took, frames_s)  # start-up and the stop together, within TimeoutStopSec


def test_real_time_indices_show_each_picture_for_as_long_as_it_stood():
    from edge.clips.recorder import real_time_indices

    assert real_time_indices([0.0, 0.5, 1.0], 4.0) == [0, 0, 1, 1, 2]  # 2 pictures/s at 4 fps: each twice
    assert real_time_indices([0.0, 0.1, 0.2], 10.0) == [0, 1, 2]  # as fast as the video: unchanged
    assert real_time_indices([0.0, 0.1, 1.0], 10.0) == [0, 1] + [1] * 8 + [2]  # a stall holds its picture
    assert real_time_indices([3.0], 10.0) == [0]


def test_a_clip_recorded_at_2_processed_frames_a_second_plays_for_its_real_duration(tmp_path, clips_dir, models):
    """Issue 41, defect 1: the ring keeps only the frames the pipeline processed and encoded them at
    clip.fps: at 1 processed frame a second a 10 s window played in under a second. The real
    pipeline at output.process_fps 2: the clip's decoded timestamps span the real seconds."""
    config = Config(clip=ClipConfig(dir=str(tmp_path / "clips")))
    config.output.process_fps = 2.0
    router = EventRouter(config, print_events=False)
    sent = []
    router.clips.send = lambda camera, payload: sent.append((camera, payload))
    run_one_camera(config, models, router, "ward1", str(clips_dir / FALL_CLIP), RunOptions(pad_end_s=6.0))
    router.close()
    assert router.events_by_type["fall_detected"] == 1 and len(sent) == 1
    payload = sent[0][1]
    real_s = payload["pre_s"] + config.clip.post_s
    assert payload["duration_s"] == pytest.approx(real_s, abs=0.6)  # shown over the real seconds ...
    assert payload["pictures"] <= 2 * real_s + 2  # ... what the pipeline processed
    capture = cv2.VideoCapture(str(tmp_path / "clips" / payload["file"]))
    stamps = []
    while capture.read()[0]:
        stamps.append(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
    assert len(stamps) == payload["frames"]
    assert stamps[-1] - stamps[0] == pytest.approx(real_s, abs=0.6)


def test_a_clip_on_a_full_disk_leaves_no_file_and_says_why(tmp_path):
    """Issue 40, defect 11: a clip that failed on a full disk left a partial .mp4 with mode 0644
    (pictures of people, readable by all) and nobody was told. On a really full tmpfs: no file of
    the clip is left and the encoder raises, which the clip writer reports in health and so in the
    device's retained status (problems.clips)."""
    from test_outbox import Tmpfs

    disk = Tmpfs(tmp_path / "disk", size="64k")
    try:
        disk.fill()
        frames = [np.full((360, 640, 3), i * 8 % 256, np.uint8) for i in range(30)]
        with pytest.raises(OSError):  # the writer thread reports it in health: clips: clip not written: ...
            encode_clip(frames, 10.0, disk.where / "x")
        assert not [p for p in disk.where.iterdir() if p.name != "filler"]
    finally:
        disk.remove()

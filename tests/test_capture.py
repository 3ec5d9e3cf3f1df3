"""Video sources: files with their own clock, padding, and a live stream over loopback HTTP."""

import functools
import http.server
import threading

import cv2
import numpy as np
import pytest

from edge.capture.opencv_source import OpenCvSource, parse_source
from edge.capture.uri import hide_credentials
from edge.errors import SourceError


def write_numbered_video(path, count, fps=20.0, size=(160, 120)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for index in range(count):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:, : (index * 4) % size[0] + 4] = 200  # a bar that grows with the frame number
        writer.write(frame)
    writer.release()


def test_file_frames_carry_index_and_stream_time(tmp_path):
    path = tmp_path / "clip.avi"
    write_numbered_video(path, 30, fps=20.0)
    with OpenCvSource(str(path), pad_end_s=0.5) as source:
        frames = list(source.frames())
    assert [f.index for f in frames] == list(range(40))  # 30 frames + 0.5 s of the held last frame
    assert frames[10].time_s == pytest.approx(0.5)
    assert np.array_equal(frames[-1].image, frames[29].image)
    assert not np.array_equal(frames[28].image, frames[29].image)


def test_parse_sources_and_hide_their_passwords():
    assert parse_source("0") == 0 and parse_source("clip.mp4") == "clip.mp4"
    assert hide_credentials("rtsp://admin:hunter2@10.0.0.5/live") == "rtsp://***@10.0.0.5/live"
    assert hide_credentials(0) == "0"


def test_a_folder_is_not_a_video(tmp_path):
    with pytest.raises(SourceError, match="is not a file"):
        OpenCvSource(str(tmp_path))


def test_live_stream_over_loopback(tmp_path):
    """A URL source is read on its own thread; frames come in order with a rising clock."""
    write_numbered_video(tmp_path / "live.avi", 60)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/live.avi"
        with OpenCvSource(url) as source:
            assert source.is_live
            frames = list(source.frames())
    finally:
        server.shutdown()
    assert 1 <= len(frames) <= 60
    indexes = [f.index for f in frames]
    assert indexes == sorted(set(indexes))  # never a frame twice, never out of order
    times = [f.time_s for f in frames]
    assert times == sorted(times)


def test_iter_video_frames_steps_or_seeks_to_the_same_frames(tmp_path):
    """Every 7th frame of a numbered clip, read through or jumped to, are the same frames."""
    from edge.capture.opencv_source import iter_video_frames
    from edge.errors import SourceError

    write_numbered_video(tmp_path / "n.avi", 30)
    stepped = list(iter_video_frames(tmp_path / "n.avi", 7))
    sought = list(iter_video_frames(tmp_path / "n.avi", 7, seek=True))
    assert len(stepped) == len(sought) == 5  # frames 0, 7, 14, 21, 28
    assert all(np.array_equal(a, b) for a, b in zip(stepped, sought))
    assert len(list(iter_video_frames(tmp_path / "n.avi"))) == 30
    with pytest.raises(SourceError, match="cannot be opened"):
        list(iter_video_frames(tmp_path / "missing.avi"))


def test_a_damaged_frame_mid_file_is_skipped_and_the_fall_behind_it_found(clips_dir, tmp_path):
    """Issue 30, defect 11: one frame the decoder refuses, half a second into a fall, ended the
    run with exit 0 and the fall missed. The frames behind it decode: they are read, on their
    own times, and the daemon finds the fall."""
    import json

    from conftest import PROJECT_ROOT, run_daemon_on_clip

    data = bytearray((clips_dir / "gmdcsa24_s1_fall15.mp4").read_bytes())  # fall from 1.6 s
    at = int(len(data) * 0.3)
    data[at:at + 20000] = bytes(20000)  # about frames 49-51 (1.6-1.7 s) undecodable
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with OpenCvSource(str(damaged)) as video:
        frames = list(video.frames())
    times = [frame.time_s for frame in frames]
    assert 170 <= len(frames) < video.frame_count and times == sorted(times)
    assert times[-1] == pytest.approx((video.frame_count - 1) / video.fps)  # read to the end, times kept
    result = run_daemon_on_clip(PROJECT_ROOT / "configs" / "default.yaml", damaged)
    assert result.returncode == 0, result.stderr
    assert "could not be decoded (the file is damaged there); skipped" in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert any(event.get("type") == "fall_detected" for event in events), result.stdout[-2000:]

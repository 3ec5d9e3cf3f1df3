"""The whole pipeline on real video: small people, odd frames, and no alarms on people walking."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import VTEST

from edge.capture.opencv_source import OpenCvSource, iter_video_frames
from edge.config import Config
from edge.daemon.pipeline import FallPipeline
from edge.daemon.runner import process_video
from edge.eval.evaluate import read_labels, score_clip
from edge.types import Frame


def fresh_skeletons(result) -> int:
    """Tracks with a skeleton of at least 8 confident joints from this very frame."""
    return sum(1 for t in result.tracks
               if t.person is not None and t.person_time_s == result.frame.time_s
               and (t.person.keypoints[:, 2] >= 0.3).sum() >= 8)


def test_crops_find_the_small_people_the_whole_frame_pass_misses(models, vtest_frames):
    """vtest: a camera high on a building, people about 1/6 of the frame height."""
    whole_frame = sum(
        sum(1 for p in models.pose.estimate(f) if (p.keypoints[:, 2] >= 0.3).sum() >= 8) for f in vtest_frames[::10]
    )
    config = Config()
    pipeline = FallPipeline(config, models.pose, models.detector)
    with_crops = 0
    for index, frame in enumerate(vtest_frames):
        result = pipeline.process(Frame(frame, index, index / 10.0))
        if index % 10 == 0:
            with_crops += fresh_skeletons(result)
    print(f"skeletons over 12 frames: whole frame {whole_frame}, with crops {with_crops}")
    assert with_crops >= 1.5 * whole_frame + 5


def test_grey_and_odd_sized_frames_go_through(models):
    pipeline = FallPipeline(Config(), models.pose, models.detector)
    rng = np.random.default_rng(0)
    for index, image in enumerate([
        rng.integers(0, 255, (211, 317), dtype=np.uint8),  # grey, odd size
        rng.integers(0, 255, (37, 1001, 3), dtype=np.uint8),  # very wide strip
        rng.integers(0, 255, (480, 640, 4), dtype=np.uint8),  # BGRA
    ]):
        result = pipeline.process(Frame(image, index, index / 10.0))
        assert result.events == []


def test_no_fall_events_while_people_walk(models):
    """All of vtest (795 frames of a crowd walking): not one fall or alarm, and few detector runs
    beyond the regular ones: people walking down the picture drop their hips fast enough to open
    fall candidates, and each extra run costs as much as eight pose passes."""
    if not VTEST.is_file():
        pytest.skip("opencv-doc not installed")
    config = Config()
    pipeline = FallPipeline(config, models.pose, models.detector)
    every_n = config.detector.every_n_frames
    events, extra_runs = [], 0
    with OpenCvSource(str(VTEST)) as video:
        for index, result in enumerate(process_video(pipeline, video, config.output.process_fps)):
            events += result.events
            extra_runs += bool(result.detector_ran and index % every_n)
    assert events == []
    assert pipeline.frames_processed > 700
    print(f"detector runs beyond every {every_n}th frame: {extra_runs} in {pipeline.frames_processed} frames")
    assert extra_runs <= 0.2 * pipeline.frames_processed / every_n  # 11 of 100 regular; 37 when every candidate asked


def shrink_clip(source: Path, target: Path, background: np.ndarray, scale: float) -> None:
    """Paste the clip, scaled down, into a large frame: the person becomes about 1/7 of its height."""
    with OpenCvSource(str(source)) as video:
        fps = video.fps
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, background.shape[1::-1])
    for frame in iter_video_frames(source):
        factor = scale * 640 / frame.shape[1]
        small = cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        canvas = background.copy()
        canvas[500:500 + small.shape[0], 700:700 + small.shape[1]] = small
        writer.write(canvas)
    writer.release()


@pytest.mark.parametrize("crops", [3, 0])
def test_falls_of_small_people_far_from_the_camera(models, clips_dir, vtest_frames, tmp_path, crops):
    """The development clips shrunk into a 1280x960 frame (standing person ~140 px, under 1/6)."""
    labels = read_labels(clips_dir / "MANIFEST.tsv")
    chosen = [n for n, label in labels.items() if label.fall] + ["gmdcsa24_s3_adl19.mp4", "gmdcsa24_s1_adl16.mp4"]
    background = cv2.resize(vtest_frames[0], (1280, 960))
    config = Config()
    config.pose.max_crops_per_frame = crops
    detected, false_alarms = 0, 0
    for name in chosen:
        small = tmp_path / name
        shrink_clip(clips_dir / name, small, background, scale=0.4)
        pipeline = FallPipeline(config, models.pose, models.detector)
        with OpenCvSource(str(small), pad_end_s=6.0) as video:
            events = [e.to_dict() for r in process_video(pipeline, video, config.output.process_fps)
                      for e in r.events]
        result = score_clip(labels[name], events)
        detected += result.detected
        false_alarms += result.false_alarm
        print(f"crops={crops} {name}: detected={result.detected} false_alarm={result.false_alarm} "
              f"delay={result.delay_s}")
    assert false_alarms == 0
    if crops:
        assert detected == 4, "with crops every fall of a small person is found"
    else:
        assert detected <= 2, "without crops the pose model loses small people (this is why crops exist)"


def test_a_run_on_a_file_shows_its_progress_on_a_terminal(tmp_path, clips_dir):
    """Issue 41, defect 6: `fall-edge run` on a file printed nothing until the end (14 minutes on
    a loaded box for the README's first command). On a terminal (a pseudo-terminal here) stderr
    carries a progress bar in seconds of video; in a pipe, nothing but the log."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "edge", "run", "--source", str(clips_dir / "gmdcsa24_s3_fall20.mp4")]
    env = dict(os.environ, PYTHONPATH=str(root))
    master, slave = pty.openpty()
    # a terminal 100 columns wide (a fresh pseudo-terminal has none, and tqdm then draws nothing)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=slave, cwd=root, env=env)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    assert run.wait(timeout=300) == 0
    os.close(master)
    text = shown.decode("utf-8", "replace")
    assert "s of video" in text and "100%" in text, text[-2000:]
    piped = subprocess.run(command, capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert piped.returncode == 0 and "s of video" not in piped.stderr

"""`--trace` lines on real video, and eval's model output cache giving back exactly what the models say."""

import json
import os
import stat

import numpy as np
import pytest
from conftest import VTEST

from edge.cli import main
from edge.config import Config
from edge.daemon.pipeline import FallPipeline
from edge.perception.output_cache import (
    OutputCache,
    fingerprint,
    pack_detections,
    pack_people,
    unpack_detections,
    unpack_people,
)
from edge.types import Box, Frame
from edge.viz.trace import TraceWriter


def test_cached_outputs_equal_the_models_own(models, vtest_frames, tmp_path):
    pose, detector = models.pose, models.detector
    frame = vtest_frames[5]
    region = Box(300, 100, 460, 260)
    fresh = (pose.estimate(frame), pose.estimate_in(frame, region), detector.detect(frame))
    assert fresh[0] and fresh[2], "vtest has people for both models"
    pose.output_cache = OutputCache(tmp_path, fingerprint(pose.cache_identity()))
    detector.output_cache = OutputCache(tmp_path, fingerprint(detector.cache_identity()))
    try:
        for _ in range(2):  # the first pass fills the cache, the second reads it
            cached = (pose.estimate(frame), pose.estimate_in(frame, region), detector.detect(frame))
        assert pose.output_cache.stats() == (2, 2) and detector.output_cache.stats() == (1, 1)
        for got, want in zip(cached[:2], fresh[:2]):
            assert len(got) == len(want)
            for a, b in zip(got, want):
                assert a.box == pytest.approx(b.box) and np.allclose(a.keypoints, b.keypoints)
        assert [d.label for d in cached[2]] == [d.label for d in fresh[2]]
        assert np.allclose([d.class_scores for d in cached[2]], [d.class_scores for d in fresh[2]])
        other = frame.copy()
        other[0, 0, 0] ^= 1  # one pixel changed: another frame, another key
        pose.estimate(other)
        assert pose.output_cache.stats() == (2, 3)
    finally:
        for model in (pose, detector):
            model.output_cache.close()
            model.output_cache = None


def test_packing_round_trip(models, vtest_frames):
    people = models.pose.estimate(vtest_frames[0])
    assert [p.score for p in unpack_people(pack_people(people))] == pytest.approx([p.score for p in people])
    detections = models.detector.detect(vtest_frames[0])
    names = models.detector.config.class_names
    again = unpack_detections(pack_detections(detections, len(names)), names)
    assert [d.box.as_list() for d in again] == [d.box.as_list() for d in detections]
    assert unpack_people(pack_people([])) == []


def test_run_trace_has_a_line_per_frame_and_track(tmp_path):
    if not VTEST.is_file():
        pytest.skip("opencv-doc not installed")
    trace_dir = tmp_path / "trace"
    clip = tmp_path / "vtest_head.avi"
    import cv2

    from edge.capture.opencv_source import iter_video_frames

    images = [image for image, _ in zip(iter_video_frames(VTEST), range(30))]
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, images[0].shape[1::-1])
    for image in images:
        writer.write(image)
    writer.release()
    assert main(["run", "--source", str(clip), "--camera", "lobby", "--trace", str(trace_dir)]) == 0
    path = trace_dir / "lobby.jsonl"
    assert stat.S_IMODE(os.stat(trace_dir).st_mode) == 0o700 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {line["frame"] for line in lines} == set(range(30))  # every frame, people or not
    people = [line for line in lines if line["track"] is not None]
    assert len({line["track"] for line in people}) >= 3  # vtest's walkers
    for key in ("observed", "box", "keypoints", "torso_angle_deg", "height_ratio", "descent", "detector_fall",
                "lying_score", "state", "why", "events"):
        assert all(key in line for line in people), key
    assert any(line["state"] == "upright" and line["height_ratio"] is not None for line in people)
    # the skeleton itself on every line with a fresh pose, in frame pixels (the sequence cue's input)
    posed = [line for line in people if "pose" in line["observed"]]
    assert posed and all(len(line["kp"]) == 18 for line in posed)
    # (scores are rounded to 0.01, so one point at the threshold may count either way)
    assert all(abs(sum(s >= 0.2 for _, _, s in line["kp"]) - line["keypoints"]) <= 1 for line in posed)
    assert all(0 <= x <= 768 and 0 <= y <= 576 for line in posed for x, y, s in line["kp"] if s >= 0.2)
    assert not any("kp" in line for line in people if "pose" not in line["observed"])


def test_trace_files_rotate_to_stay_bounded(models, vtest_frames, tmp_path):
    writer = TraceWriter(tmp_path, "cam", Config().pose.min_keypoint_score, max_bytes=2000)
    pipeline = FallPipeline(Config(), models.pose, models.detector)
    for index, image in enumerate(vtest_frames[:20]):
        writer(pipeline.process(Frame(image, index, index / 10.0)))
    writer.close()
    assert (tmp_path / "cam.jsonl.1").stat().st_size >= 2000
    assert (tmp_path / "cam.jsonl").stat().st_size < 2000 + 20000
    assert not (tmp_path / "cam.jsonl.2").exists()

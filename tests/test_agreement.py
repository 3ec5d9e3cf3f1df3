"""The INT8 agreement check (edge/export/agreement.py): the measure itself on hand-made skeletons,
and the code path the build runs on the Jetson, here on ONNX Runtime pairs (a trt_pose network
with random weights against its own INT8 quantization; the fetched detector's pair is in
tests/test_build.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.export.agreement import Agreement, pose_frame
from edge.export.build_engines import int8_verdict
from edge.types import KEYPOINT_INDEX, NUM_KEYPOINTS, Person

ROOT = Path(__file__).resolve().parents[1]
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def standing(x: float, y: float, torso: float = 100.0) -> Person:
    """A skeleton whose torso (neck to hip midpoint) is `torso` pixels long."""
    keypoints = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    for index in range(NUM_KEYPOINTS):
        keypoints[index] = (x + 3.0 * (index % 4), y + 12.0 * index, 0.9)
    keypoints[KEYPOINT_INDEX["neck"]] = (x, y, 0.9)
    for hip in ("left_hip", "right_hip"):
        keypoints[KEYPOINT_INDEX[hip]] = (x, y + torso, 0.9)
    for shoulder in ("left_shoulder", "right_shoulder"):
        keypoints[KEYPOINT_INDEX[shoulder]] = (x, y, 0.9)
    return Person(box=(x - 20, y - 20, x + 20, y + 240), score=0.9, keypoints=keypoints)


def moved(person: Person, dx: float) -> Person:
    keypoints = person.keypoints.copy()
    keypoints[:, 0] += dx
    return Person(box=person.box, score=person.score, keypoints=keypoints)


def test_pck_counts_keypoints_within_a_tenth_of_the_torso():
    a, b = standing(100, 50), standing(400, 60)
    assert pose_frame([a, b], [b, a], 0.2) == (36, 36)  # order does not matter: people are paired
    assert pose_frame([a], [moved(a, 5.0)], 0.2) == (18, 18)  # 0.05 torso away
    assert pose_frame([a], [moved(a, 20.0)], 0.2) == (0, 18)  # 0.2 torso away
    assert pose_frame([a, b], [a], 0.2) == (18, 36)  # a missed person counts all their keypoints
    assert pose_frame([a], [a, b], 0.2) == (18, 18)  # an extra one does not change PCK
    faint = Person(box=a.box, score=a.score, keypoints=a.keypoints * np.array([1, 1, 0], np.float32))
    assert pose_frame([a], [faint], 0.2) == (0, 18)  # keypoints below the score do not agree


def test_the_verdict_keeps_int8_at_or_above_the_floor_and_says_why_not():
    good = Agreement("pose", 40, 0.93, 52, 51, frames_with_other_count=1)
    keep, line = int8_verdict(good, 0.85)
    assert keep and line.startswith("pose agreement on 40 frames: PCK@0.1 0.930") and "INT8 kept" in line
    keep, line = int8_verdict(Agreement("detector", 40, 0.62, 100, 80, iou_median=0.9), 0.85)
    assert not keep and "under the floor 0.85" in line and "FP16 one kept" in line


@pytest.fixture(scope="module")
def pose_pair(tmp_path_factory):
    """trt_pose's resnet18 with random weights, in float and quantized by ONNX Runtime, and frames."""
    torch = pytest.importorskip("torch", reason="PyTorch missing: scripts/bootstrap.sh --dev installs it")
    if not VTEST.exists():
        pytest.skip("opencv-doc's vtest.avi missing")
    from edge.export.calibration import extract_frames
    from edge.export.onnx_export import export_onnx
    from edge.export.quantize import quantize_onnx
    from edge.export.trt_pose_net import build_trt_pose

    folder = tmp_path_factory.mktemp("pose-pair")
    extract_frames([VTEST], folder / "frames", every_s=8.0, limit=4)
    torch.manual_seed(0)
    float_model = export_onnx(build_trt_pose("resnet18_baseline_att").eval(), (1, 3, 224, 224),
                              folder / "pose.onnx", "input", ["cmap", "paf"])
    int8_model = quantize_onnx(float_model, folder / "pose_int8.onnx", folder / "frames", "trt_pose")
    # Random weights give weak maps: low thresholds make skeletons of them, so the measure has
    # people to compare (noise, which INT8 does not reproduce).
    config = folder / "config.yaml"
    config.write_text("pose:\n  input_size: 224\n  cmap_threshold: 0.02\n  link_threshold: 0.02\n"
                      "  min_keypoint_score: 0.02\n")
    return float_model, int8_model, folder / "frames", config


def agreement_cli(reference, candidate, frames, config) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", "int8-agreement", str(reference), str(candidate), str(frames),
                           "--kind", "trt_pose", "--config", str(config)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_a_pose_model_agrees_completely_with_itself(pose_pair):
    float_model, _, frames, config = pose_pair
    result = agreement_cli(float_model, float_model, frames, config)
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stderr
    assert report["score"] == 1.0 and report["reference_found"] == report["candidate_found"] > 0
    assert report["frames"] == 4 and report["frames_with_other_count"] == 0 and report["kept"] is True


def test_an_int8_pose_model_that_disagrees_is_refused(pose_pair):
    float_model, int8_model, frames, config = pose_pair
    result = agreement_cli(float_model, int8_model, frames, config)
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["score"] < 0.85 and report["kept"] is False and report["reference_found"] > 0
    assert "under the floor 0.85, so the INT8 engine is refused" in result.stderr

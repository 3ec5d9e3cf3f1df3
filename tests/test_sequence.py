"""The sequence cue's windows: resampled to a fixed clock, normalised to the person's own size."""

from pathlib import Path

import numpy as np
import pytest
from skeletons import pose

from edge.fall.sequence import FEATURES, STEP_S, WINDOW_FRAMES, WINDOW_S, resample, window_features


def skeleton_track(fps: float, scale: float = 1.0, shift_x: float = 0.0):
    """Standing for 1.2 s, then tipping over in 0.8 s, then lying: (time, keypoints) at fps."""
    out = []
    for index in range(int(3.0 * fps)):
        time_s = index / fps
        keypoints = pose(scale=scale, body_tilt_deg=85.0 * min(1.0, max(0.0, (time_s - 1.2) / 0.8)))
        keypoints[:, 0] += shift_x
        out.append((time_s, keypoints))
    return out


def test_a_window_is_the_same_whatever_the_frame_rate():
    end = 2.9
    windows = [window_features(resample(skeleton_track(fps), end), 0.2) for fps in (10.0, 30.0, 15.0)]
    assert all(w is not None and w.shape == (WINDOW_FRAMES, FEATURES) for w in windows)
    assert np.abs(windows[0] - windows[1]).max() < 0.01  # the same moments, sampled at another rate
    assert windows[0][:, -1].all() and windows[2][:, -1].sum() >= WINDOW_FRAMES - 1
    # 5 frames/s: every other step has no skeleton, and says so
    sparse = window_features(resample(skeleton_track(5.0), end), 0.2)
    assert 8 <= sparse[:, -1].sum() <= 12 and not sparse[sparse[:, -1] == 0].any()


def test_a_window_is_the_same_near_and_far_and_anywhere_in_the_picture():
    near = window_features(resample(skeleton_track(10.0), 2.9), 0.2)
    far = window_features(resample(skeleton_track(10.0, scale=0.3, shift_x=-150.0), 2.9), 0.2)
    assert np.abs(near - far).max() < 1e-3


def test_a_fall_sweeps_the_points_down_by_about_a_body_length():
    window = window_features(resample(skeleton_track(10.0), 2.9), 0.2)
    nose_y = window[:, 1]  # point 0 is the nose: (x, y, score)
    assert nose_y[0] < -0.4  # standing: the head about half a body length above the hips
    assert nose_y[-1] > nose_y[0] + 0.4  # lying: the head down at hip height
    assert WINDOW_S == pytest.approx(WINDOW_FRAMES * STEP_S)


def test_no_skeleton_no_window():
    assert window_features(resample([], 1.0), 0.2) is None
    faint = [(t, kp * np.array([1, 1, 0.1], np.float32)) for t, kp in skeleton_track(10.0)]
    assert window_features(resample(faint, 2.9), 0.2) is None


def test_the_shipped_model_scores_windows_and_is_checked_against_its_manifest(tmp_path):
    from edge.config import Config
    from edge.daemon.runner import load_sequence_cue

    config = Config()
    scorer, problem = load_sequence_cue(config)
    assert problem is None and scorer is not None
    falling = window_features(resample(skeleton_track(10.0), 2.9), 0.2)
    standing = window_features(resample(skeleton_track(10.0), 1.1), 0.2)
    scores = scorer.score([falling, standing] * 5)  # more than one model batch
    assert len(scores) == 10 and all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] == pytest.approx(scores[2]) and scores[1] == pytest.approx(scores[3])
    assert scores[1] < 0.3 < 0.5 < scores[0]  # a body tipping over to the floor is, standing still is not
    # a damaged copy is refused by its manifest's sha256, and the daemon goes on without the cue
    model = tmp_path / "fall_sequence.onnx"
    data = bytearray((Path(__file__).parents[1] / "models" / "fall_sequence.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    (tmp_path / "fall_sequence.json").write_text((Path(__file__).parents[1] / "models" / "fall_sequence.json")
                                                .read_text())
    config.sequence.model = str(model)
    scorer, problem = load_sequence_cue(config)
    assert scorer is None and "does not match the sha256 in fall_sequence.json" in problem
    config.sequence.model = str(tmp_path / "missing.onnx")
    assert "missing" in load_sequence_cue(config)[1]
    config.sequence.enabled = False
    assert load_sequence_cue(config) == (None, None)

from pathlib import Path

import pytest

from edge.config import Config, config_from_dict, load_config
from edge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_file_matches_built_in_defaults():
    assert load_config(ROOT / "configs" / "default.yaml") == Config()


def test_no_file_gives_defaults():
    assert load_config(None) == Config()


def test_values_are_read_and_ints_become_floats():
    config = config_from_dict({"fall": {"alarm_hold_s": 5}, "output": {"camera": "hall"}})
    assert config.fall.alarm_hold_s == 5.0 and isinstance(config.fall.alarm_hold_s, float)
    assert config.output.camera == "hall"
    assert config.pose == Config().pose


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"fall": {"alarm_hold": 2}}, "unknown key 'fall.alarm_hold' (did you mean 'fall.alarm_hold_s'?)"),
        ({"detecter": {}}, "unknown key 'detecter' (did you mean 'detector'?)"),
        ({"fall": {"alarm_hold_s": "soon"}}, "'fall.alarm_hold_s' must be a number"),
        ({"detector": {"every_n_frames": 2.5}}, "'detector.every_n_frames' must be an integer"),
        ({"detector": {"enabled": "yes"}}, "'detector.enabled' must be true or false"),
        ({"detector": {"class_names": "Fall"}}, "'detector.class_names' must be a list"),
        ({"detector": {"class_names": ["Normal", 3]}}, "'detector.class_names[1]' must be a string"),
        ({"pose": 3}, "'pose' must be a mapping"),
    ],
)
def test_bad_values_name_the_key(raw, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw)
    assert message in str(error.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fall:\n  alarm_hold_s: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    top_level_list = tmp_path / "list.yaml"
    top_level_list.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(top_level_list)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"fall": {"lying_exit": 0.7}}, "'fall.lying_exit' must be below fall.lying_enter"),
        ({"pose": {"input_size": 250}}, "'pose.input_size' must be a multiple of 32"),
        ({"detector": {"layout": "yolov9"}}, "'detector.layout' must be auto, yolov8 or yolov5"),
        ({"detector": {"score_threshold": 1.5}}, "'detector.score_threshold' must be between 0 and 1"),
        ({"output": {"process_fps": -1}}, "'output.process_fps' must be 0"),
        ({"output": {"camera": "hall/1"}}, "'output.camera' must be a name of at most 100 characters without /"),
        # issue 30, defect 11: these gave tracebacks
        ({"mqtt": {"host": ""}}, "'mqtt.host' must be the broker's host name or address"),
        ({"mqtt": {"device": "a" * 65536}}, "'mqtt.device' must be a name of at most 100 characters"),
        ({"mqtt": {"port": 70000}}, "'mqtt.port' must be between 1 and 65535"),
        ({"mqtt": {"cert_file": "c.pem", "key_file": "k.pem"}}, "'mqtt.cert_file' needs mqtt.ca_file"),
        ({"buzzer": {"alarm_pattern_s": [1.0]}}, "'buzzer.alarm_pattern_s' must be [on seconds, off seconds]"),
        ({"buzzer": {"pin_factory": "rpigpio"}}, "'buzzer.pin_factory' must be default, jetson or mock"),
        # issue 30, defect 11: a huge weight made every lying score NaN (no fall, no word), and a
        # huge beep overflowed the buzzer's timer thread
        ({"fall": {"weight_descent": 1e308}}, "'fall.weight_descent' must be between 0 (the cue is off) and 10"),
        ({"buzzer": {"fall_pattern_s": [1e308, 0.2]}}, "both above 0 and at most 60"),
        # ... and a bad build section beside the old flat key was dropped silently
        ({"detector": {"build_from": "a.onnx", "build": "fp16"}}, "'detector.build' must be a mapping, got str"),
    ],
)
def test_out_of_range_values_name_the_key(raw, message):
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw)
    assert message in str(error.value)


def test_a_number_too_long_to_read_is_a_config_error(tmp_path):
    """Issue 30, defect 11: a 5,000-digit integer raised from inside the YAML loader."""
    path = tmp_path / "long.yaml"
    path.write_text("mqtt:\n  port: " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError, match="holds a number too long to read"):
        load_config(path)


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    """Issue 30, defect 11: nine levels of nine aliases on a typed key took 4.9 GB and 120 s to
    report (the error message expanded the value)."""
    import time

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nfall:\n  lying_enter: *a9\n")
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"uses the YAML alias \*a0 \(line 2\): write the value out"):
        load_config(path)
    assert time.monotonic() - started < 5


def test_a_bad_file_reports_every_problem_at_once_on_one_line():
    raw = {"detector": {"score_threshold": 2.0}, "capture": {"reader": "vlc"}, "mqtt": {"key_file": "k.pem"},
           "buzzer": {"pin": 99}}
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw)
    text = str(error.value)
    assert "\n" not in text and text.count("; ") == 3 and "4 problems" in text
    for key in ("'detector.score_threshold'", "'capture.reader'", "'mqtt.key_file'", "'buzzer.pin'"):
        assert key in text


def test_unknown_keys_wrong_types_and_broken_rules_are_reported_together():
    raw = {"fall": {"alarm_hold": 2, "confirm_s": "soon", "lying_exit": 0.9}, "detecter": {}}
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw)
    text = str(error.value)
    assert "4 problems" in text and "\n" not in text
    for part in ("unknown key 'fall.alarm_hold' (did you mean 'fall.alarm_hold_s'?)",
                 "'fall.confirm_s' must be a number", "'fall.lying_exit' must be below fall.lying_enter",
                 "unknown key 'detecter' (did you mean 'detector'?)"):
        assert part in text


def test_the_defaults_keep_every_rule_of_the_schema():
    from edge.config.checks import problems

    assert problems(Config()) == []


def test_files_with_the_old_flat_build_keys_still_load():
    old = config_from_dict({"pose": {"build_from": "p.pth", "build_precision": "int8", "build_calibration_dir": "calib",
                                     "build_min_agreement": 0.9}})
    new = config_from_dict({"pose": {"build": {"source": "p.pth", "precision": "int8", "calibration_dir": "calib",
                                               "min_agreement": 0.9}}})
    assert old == new and new.pose.build.min_agreement == 0.9
    with pytest.raises(ConfigError, match="'detector.build_from' and 'detector.build.source' are the same setting"):
        config_from_dict({"detector": {"build_from": "a.onnx", "build": {"source": "b.onnx"}}})
    with pytest.raises(ConfigError, match="'pose.build.calibration_dir' must name a folder of images for an int8"):
        config_from_dict({"pose": {"build_from": "p.pth", "build_precision": "int8"}})


def test_the_jetson_example_config_is_valid():
    config = load_config(ROOT / "configs" / "jetson.yaml")
    assert config.detector.type == "tensorrt" and config.pose.type == "tensorrt"
    for section in (config.detector, config.pose):  # both at INT8 (FP16 on a Nano, chosen at build time)
        assert section.build.precision == "int8" and section.build.calibration_dir == "calib"
        assert section.build.min_agreement == 0.85 and section.build.source


def test_clip_memory_is_bounded_by_a_rule_per_camera_and_per_device():
    """Issue 40, defect 10: clip: {pre_s: 30, post_s: 30, fps: 30, width: 0} was accepted, about
    1.9 GB of ring a 1080p camera: an OOM kill on any Jetson."""
    from edge.config.schema import clip_megabytes

    with pytest.raises(ConfigError) as error:
        config_from_dict({"clip": {"pre_s": 30, "post_s": 30, "fps": 30, "width": 0}})
    text = str(error.value)
    assert "'clip.fps' makes each camera's clip memory too large" in text and "256 MB" in text
    assert "width 0 counts as 1920" in text and text.count("\n") == 0
    assert clip_megabytes(Config().clip) == pytest.approx(92.16)  # the defaults: 10 s at 10 fps, 640x480
    cameras = [{"name": f"ward{n}", "source": "test://"} for n in range(4)]
    config_from_dict({"cameras": cameras[:2], "clip": {"fps": 20}})  # 184 MB each, 369 MB in all
    with pytest.raises(ConfigError, match="clip memory of all cameras too large: cameras x .* 512 MB"):
        config_from_dict({"cameras": cameras[:3], "clip": {"fps": 20}})
    config_from_dict({"cameras": cameras[:3], "clip": {"fps": 20, "enabled": False}})  # no rings at all
    config_from_dict({"cameras": cameras, "clip": {"width": 320}})  # four cameras at a smaller width


def test_a_clip_kept_as_captured_is_never_wider_than_the_rule_counted():
    import numpy as np

    from edge.clips.recorder import CameraRing
    from edge.config import ClipConfig
    from edge.types import Frame, FrameResult

    ring = CameraRing(ClipConfig(width=0), None)
    image = np.zeros((2160, 3840, 3), np.uint8)  # a 4K camera
    ring.offer(FrameResult(camera="cam0", frame=Frame(image=image, index=0, time_s=0.0), tracks=[], events=[],
                           detector_ran=False))
    assert ring.memory_bytes == 1920 * 1080 * 3


@pytest.mark.parametrize("names", [["ward 1", "ward_1"], ["Ward_1", "ward_1"], ["ward.1", "ward_1"]])
def test_names_that_become_one_home_assistant_id_are_refused(names):
    """Issue 40, defect 9: cameras 'ward 1' and 'ward_1' shared one discovery topic (one fall
    sensor silently gone), 'Ward_1' got the same object id, zones 'press 1'/'press_1' became one
    sensor; the config accepted all of them."""
    polygon = [[0.1, 0.1], [0.4, 0.1], [0.4, 0.4]]
    cameras = [{"name": name, "source": "test://"} for name in names]
    with pytest.raises(ConfigError, match="'cameras\\[\\].name' must be unique, also once spaces"):
        config_from_dict({"cameras": cameras})
    zones = [{"name": name, "kind": "danger", "polygon": polygon} for name in names]
    with pytest.raises(ConfigError, match="'cameras\\[\\].zones\\[\\].name' must be unique within a camera, also"):
        config_from_dict({"cameras": [{"name": "hall", "source": "test://", "zones": zones}]})
    with pytest.raises(ConfigError, match="'zones\\[\\].name' must be unique within a camera, also"):
        config_from_dict({"zones": zones})
    config_from_dict({"cameras": [{"name": "ward1", "source": "test://"}, {"name": "ward2", "source": "test://"}]})

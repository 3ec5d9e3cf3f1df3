"""Load and validate the YAML config: unknown keys and wrong types are errors naming the key."""


import dataclasses
import difflib
import logging
import math
import re
import typing
from pathlib import Path
from typing import Any, Dict, Optional, Union

import yaml

from edge.config.rules import (
    BUILD_PRECISIONS,
    CAPTURE_READERS,
    PIN_FACTORIES,
    YOLO_LAYOUTS,
    one_of,
    tls_files_problem,
    valid_input_size,
    valid_topic_level,
)
from edge.config.schema import Config
from edge.errors import ConfigError

logger = logging.getLogger(__name__)

_MAX_THREADS = 64  # more only thrashes (100000 hung the daemon)
MAX_MQTT_BACKOFF_S = 10.0  # alarms stored during an outage reach the control room within 15 s of its end


def load_config(path: Optional[Union[str, Path]]) -> Config:
    """Read a config file; None gives the built-in defaults."""
    if path is None:
        return Config()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found: pass --config with an existing YAML file")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except _DuplicateKeyError as exc:
        raise ConfigError(f"config file {path}: {exc}: keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply: a config has sections one level deep") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc}): check its permissions") from None
    if raw is None:
        raw = {}
    try:
        config = config_from_dict(raw, source=str(path))
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply: a config has sections one level deep") from None
    logger.debug("loaded config from %s", path)
    return config


class _DuplicateKeyError(yaml.YAMLError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, but a key given twice in one mapping is an error (PyYAML keeps the
    last silently), and 1e308 is a number (YAML 1.1 wants a dot in it)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: let PyYAML report it
                continue
            if duplicate:
                raise _DuplicateKeyError(f"key '{key}' appears twice (line {key_node.start_mark.line + 1})")
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def config_from_dict(raw: Any, source: str = "config") -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(raw).__name__}")
    config = _build(Config, raw, prefix="", source=source)
    _check_ranges(config, source)
    return config


def _build(cls: type, raw: Dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: Dict[str, Any] = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f" (known keys: {', '.join(fields)})"
            shown = dotted.encode("unicode_escape").decode("ascii")  # one line, whatever the key holds
            raise ConfigError(f"{source}: unknown key '{shown}'{hint}")
        values[key] = _convert(hints[key], value, dotted, source)
    return cls(**values)


def _convert(expected: Any, value: Any, dotted: str, source: str) -> Any:
    if dataclasses.is_dataclass(expected):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{dotted}' must be a mapping, got {type(value).__name__}")
        return _build(expected, value, prefix=f"{dotted}.", source=source)
    # typing.get_origin/get_args are 3.8+ (JetPack 4.6 has 3.6); for Optional[X] and List[X] the
    # dunders say the same on every version (List's origin is typing.List on 3.6, list later).
    origin = getattr(expected, "__origin__", None)
    if origin is Union:
        options = [arg for arg in getattr(expected, "__args__", ()) if arg is not type(None)]
        if value is None:
            return None
        return _convert(options[0], value, dotted, source)
    if origin in (list, typing.List):
        (item_type,) = getattr(expected, "__args__", ())
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{dotted}' must be a list, got {type(value).__name__}")
        return [_convert(item_type, item, f"{dotted}[{i}]", source) for i, item in enumerate(value)]
    if expected is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{dotted}' must be true or false, got {value!r}")
        return value
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{dotted}' must be an integer, got {value!r}")
        return value
    if expected is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{dotted}' must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{source}: '{dotted}' must be a finite number, got {value!r}")
        return number
    if expected is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{dotted}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{source}: '{dotted}' has an unsupported type {expected!r}")  # pragma: no cover


def _check_ranges(config: Config, source: str) -> None:
    """Values that parse but make no sense: each names the key and the allowed range."""
    problems = []

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            problems.append(f"'{key}' {rule}")

    for key in ("score_threshold", "iou_threshold"):
        need(0.0 <= getattr(config.detector, key) <= 1.0, f"detector.{key}", "must be between 0 and 1")
    need(valid_input_size(config.detector.input_size), "detector.input_size",
         "must be a multiple of 32, at least 64")
    need(config.detector.every_n_frames >= 1, "detector.every_n_frames", "must be at least 1")
    need(config.detector.layout in YOLO_LAYOUTS, "detector.layout", "must be " + one_of(YOLO_LAYOUTS))
    need(len(config.detector.class_names) >= 1, "detector.class_names", "must name at least one class")
    need(valid_input_size(config.pose.input_size), "pose.input_size",
         "must be a multiple of 32, at least 64")
    for key in ("min_person_score", "min_keypoint_score", "crop_below_height_fraction"):
        need(0.0 <= getattr(config.pose, key) <= 1.0, f"pose.{key}", "must be between 0 and 1")
    need(config.pose.crop_margin >= 0, "pose.crop_margin", "must be 0 or more")
    need(config.pose.max_crops_per_frame >= 0, "pose.max_crops_per_frame", "must be 0 or more")
    for section in ("detector", "pose"):
        need(1 <= getattr(config, section).threads <= _MAX_THREADS, f"{section}.threads",
             f"must be between 1 and {_MAX_THREADS}")
    need(config.tracker.min_hits >= 1, "tracker.min_hits", "must be at least 1")
    need(config.detector.every_n_frames <= 1000, "detector.every_n_frames", "must be at most 1000")
    need(config.pose.max_crops_per_frame <= 64, "pose.max_crops_per_frame", "must be at most 64")
    need(0.0 <= config.tracker.iou_threshold <= 1.0, "tracker.iou_threshold", "must be between 0 and 1")
    need(config.tracker.max_age_s > 0, "tracker.max_age_s", "must be above 0")
    need(config.tracker.down_max_age_s >= config.tracker.max_age_s, "tracker.down_max_age_s",
         "must be at least tracker.max_age_s")
    need(config.tracker.handover_s >= 0, "tracker.handover_s", "must be 0 (no handover) or more")
    need(config.tracker.handover_reach >= 0, "tracker.handover_reach", "must be 0 or more")
    fall = config.fall
    need(fall.torso_angle_low_deg < fall.torso_angle_high_deg, "fall.torso_angle_low_deg",
         "must be below fall.torso_angle_high_deg")
    need(fall.aspect_low < fall.aspect_high, "fall.aspect_low", "must be below fall.aspect_high")
    for key in ("weight_torso_angle", "weight_aspect", "weight_detector", "weight_collapse", "weight_descent"):
        need(getattr(fall, key) >= 0, f"fall.{key}", "must be 0 or more")
    need(0 < fall.collapse_full_ratio < fall.collapse_start_ratio <= 1.5, "fall.collapse_full_ratio",
         "must be above 0 and below fall.collapse_start_ratio (at most 1.5)")
    need(0 < fall.foreshortened_below <= 1, "fall.foreshortened_below", "must be above 0 and at most 1")
    need(fall.detector_boost_foreshortened >= 1, "fall.detector_boost_foreshortened", "must be at least 1")
    need(fall.descent_full > fall.min_descent, "fall.descent_full", "must be above fall.min_descent")
    need(fall.fast_descent_speed > 0, "fall.fast_descent_speed", "must be above 0")
    need(fall.weight_torso_angle + fall.weight_aspect > 0, "fall.weight_torso_angle",
         "and fall.weight_aspect cannot both be 0")
    for key in ("lying_enter", "lying_exit", "upright_below"):
        need(0.0 <= getattr(fall, key) <= 1.0, f"fall.{key}", "must be between 0 and 1")
    need(fall.lying_exit < fall.lying_enter, "fall.lying_exit", "must be below fall.lying_enter (hysteresis)")
    need(fall.upright_below <= fall.lying_exit, "fall.upright_below", "must not exceed fall.lying_exit")
    for key in ("min_upright_s", "fall_window_s", "min_descent", "confirm_s", "alarm_hold_s", "recover_s",
                "detector_max_age_s", "lost_confirm_s", "lost_min_descent", "quick_upright_s"):
        need(getattr(fall, key) >= 0, f"fall.{key}", "must be 0 or more")
    need(fall.quick_upright_s <= fall.min_upright_s, "fall.quick_upright_s", "must not exceed fall.min_upright_s")
    need(config.output.process_fps >= 0, "output.process_fps", "must be 0 (every frame) or more")
    need(valid_topic_level(config.output.camera), "output.camera", "must be a name without / + # or spaces at the ends")
    mqtt = config.mqtt
    need(1 <= mqtt.port <= 65535, "mqtt.port", "must be between 1 and 65535")
    need(mqtt.device == "" or valid_topic_level(mqtt.device), "mqtt.device", "must be a name without / + #")
    need(valid_topic_level(mqtt.prefix), "mqtt.prefix", "must be one topic level without / + #")
    need(mqtt.keepalive_s >= 1, "mqtt.keepalive_s", "must be at least 1")
    need(1 <= mqtt.outbox_max_events <= 10_000_000, "mqtt.outbox_max_events", "must be between 1 and 10000000")
    need(1 <= mqtt.max_inflight <= 65535, "mqtt.max_inflight", "must be between 1 and 65535")
    need(mqtt.keepalive_s <= 65535, "mqtt.keepalive_s", "must be at most 65535 (MQTT's limit)")
    need(0 < mqtt.reconnect_min_s <= mqtt.reconnect_max_s, "mqtt.reconnect_min_s",
         "must be above 0 and at most mqtt.reconnect_max_s")
    need(mqtt.reconnect_max_s <= MAX_MQTT_BACKOFF_S, "mqtt.reconnect_max_s",
         f"must be at most {MAX_MQTT_BACKOFF_S:.0f} (alarms must reach the control room soon after the broker is back)")
    need(mqtt.health_interval_s > 0, "mqtt.health_interval_s", "must be above 0")
    need(1 <= mqtt.command_max_age_s <= 3600, "mqtt.command_max_age_s", "must be between 1 and 3600")
    need(mqtt.snapshot_keep >= 0, "mqtt.snapshot_keep", "must be 0 (keep none on disk) or more")
    need(mqtt.snapshot_max_age_days > 0, "mqtt.snapshot_max_age_days", "must be above 0")
    tls = tls_files_problem(mqtt.ca_file, mqtt.cert_file, mqtt.key_file)
    if tls is not None:
        problems.append(tls)
    buzzer = config.buzzer
    for key in ("fall_pattern_s", "alarm_pattern_s"):
        pattern = getattr(buzzer, key)
        need(len(pattern) == 2 and all(v > 0 for v in pattern), f"buzzer.{key}",
             "must be [on seconds, off seconds], both above 0")
    need(buzzer.auto_stop_s > 0, "buzzer.auto_stop_s", "must be above 0")
    need(buzzer.pin_factory in PIN_FACTORIES, "buzzer.pin_factory", "must be " + one_of(PIN_FACTORIES))
    need(0 <= buzzer.pin <= 40, "buzzer.pin", "must be a GPIO number from 0 to 40")
    for section_name in ("detector", "pose"):
        section = getattr(config, section_name)
        need(section.build_precision in BUILD_PRECISIONS, f"{section_name}.build_precision",
             "must be " + one_of(BUILD_PRECISIONS))
        need(not (section.build_precision == "int8" and section.build_from and not section.build_calibration_dir),
             f"{section_name}.build_calibration_dir", "must name a folder of images for an int8 build")
        need(0 <= section.build_min_agreement <= 1, f"{section_name}.build_min_agreement",
             "must be between 0 (no check) and 1")
    need(0 < config.pose.cmap_threshold < 1, "pose.cmap_threshold", "must be between 0 and 1")
    need(0 <= config.pose.link_threshold < 1, "pose.link_threshold", "must be between 0 and 1")
    capture = config.capture
    need(capture.reader in CAPTURE_READERS, "capture.reader", "must be one of " + ", ".join(CAPTURE_READERS))
    need(16 <= capture.width <= 7680 and capture.width % 2 == 0, "capture.width", "must be even, 16 to 7680")
    need(16 <= capture.height <= 4320 and capture.height % 2 == 0, "capture.height", "must be even, 16 to 4320")
    need(1 <= capture.fps <= 120, "capture.fps", "must be between 1 and 120")
    need(capture.stall_timeout_s > 0, "capture.stall_timeout_s", "must be above 0")
    need(0 < capture.reconnect_min_s <= capture.reconnect_max_s, "capture.reconnect_min_s",
         "must be above 0 and at most capture.reconnect_max_s")
    names = [camera.name for camera in config.cameras]
    need(all(valid_topic_level(name) for name in names), "cameras[].name", "must be names without / + #")
    need(len(set(names)) == len(names), "cameras[].name", "must be unique")
    need(all(camera.source.strip() for camera in config.cameras), "cameras[].source", "must not be empty")
    need(config.speech.repeat_interval_s > 0, "speech.repeat_interval_s", "must be above 0")
    need(80 <= config.speech.words_per_minute <= 450, "speech.words_per_minute", "must be between 80 and 450")
    need(bool(config.speech.voice.strip()), "speech.voice", "must name an espeak-ng voice (e.g. ko)")
    if len(problems) == 1:
        raise ConfigError(f"{source}: {problems[0]}")
    if problems:  # every problem at once, still on one line
        raise ConfigError(f"{source}: {len(problems)} problems: " + "; ".join(problems))


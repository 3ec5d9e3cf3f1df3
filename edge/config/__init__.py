"""One validated config file: see schema.py for the keys and loader.py for the rules."""

from edge.config.loader import config_from_dict, load_config
from edge.config.schema import (
    BuzzerConfig,
    CameraConfig,
    CaptureConfig,
    Config,
    DetectorConfig,
    FallConfig,
    MqttConfig,
    OutputConfig,
    PoseConfig,
    SpeechConfig,
    TrackerConfig,
)

__all__ = [
    "BuzzerConfig",
    "CameraConfig",
    "CaptureConfig",
    "Config",
    "DetectorConfig",
    "FallConfig",
    "MqttConfig",
    "OutputConfig",
    "PoseConfig",
    "SpeechConfig",
    "TrackerConfig",
    "config_from_dict",
    "load_config",
]

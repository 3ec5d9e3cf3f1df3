"""One validated config file: schema.py has the keys and their rules, checks.py the checker,
loader.py reads the YAML."""

from edge.config.loader import config_from_dict, load_config
from edge.config.schema import (
    BuildConfig,
    BuzzerConfig,
    CameraConfig,
    CaptureConfig,
    Config,
    ConsoleConfig,
    DetectorConfig,
    FallConfig,
    MqttConfig,
    OperatorConfig,
    OutputConfig,
    PoseConfig,
    SequenceConfig,
    SpeechConfig,
    TrackerConfig,
    ZoneConfig,
)

__all__ = [
    "BuildConfig",
    "BuzzerConfig",
    "CameraConfig",
    "CaptureConfig",
    "Config",
    "ConsoleConfig",
    "DetectorConfig",
    "FallConfig",
    "MqttConfig",
    "OperatorConfig",
    "OutputConfig",
    "PoseConfig",
    "SequenceConfig",
    "SpeechConfig",
    "TrackerConfig",
    "ZoneConfig",
    "config_from_dict",
    "load_config",
]

"""One validated config file: see schema.py for the keys and loader.py for the rules."""

from edge.config.loader import config_from_dict, load_config
from edge.config.schema import (
    Config,
    DetectorConfig,
    FallConfig,
    OutputConfig,
    PoseConfig,
    TrackerConfig,
)

__all__ = [
    "Config",
    "DetectorConfig",
    "FallConfig",
    "OutputConfig",
    "PoseConfig",
    "TrackerConfig",
    "config_from_dict",
    "load_config",
]

"""fall-edge: on-device fall detection for NVIDIA Jetson, with a CPU backend that runs anywhere."""

__version__ = "0.1.0"

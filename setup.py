"""fall-edge: on-device fall detection for NVIDIA Jetson, with a CPU backend that runs anywhere."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# ai-edge-litert has no Python 3.8 wheel; tflite-runtime is the same interpreter there.
CPU_RUNTIMES = ["onnxruntime>=1.15", "ai-edge-litert>=1.0; python_version>='3.9'",
                "tflite-runtime>=2.13; python_version<'3.9'"]

setup(
    name="fall-edge",
    version="0.1.0",
    description="On-device fall detection: pose + detector, per-person fall state machine, alarms and MQTT",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.6",  # 3.6: the Jetson path only (tests/test_python36.py)
    packages=find_packages(include=["edge", "edge.*"]),
    install_requires=[
        "numpy>=1.19",
        "PyYAML>=5.3",
        "scipy>=1.5",
        # JetPack 4.6 (the Jetson Nano's last) has Python 3.6: paho-mqtt 2.x needs 3.7 and
        # gpiozero 2.x imports importlib.metadata (3.8) though pip offers it to 3.6. The 1.6 lines
        # of both work there (edge/mqtt/connection.py, edge/alarms/jetson_pins.py; tests/test_jetpack46.py).
        "paho-mqtt>=2.0,<3; python_version>='3.7'",
        "paho-mqtt>=1.6,<2; python_version<'3.7'",
        "gpiozero>=2.0,<3; python_version>='3.8'",
        "gpiozero>=1.6.2,<2; python_version<'3.8'",
        "dataclasses>=0.8; python_version<'3.7'",
        # Progress bars for eval (4.64 is the last release that still installs on Python 3.6).
        "tqdm>=4.62",
        # The monitor's webhook retries (8.2 is the last release for Python 3.6).
        "tenacity>=8",
        # The device page's /metrics (0.17 is the last release for Python 3.6).
        "prometheus-client>=0.17",
    ],
    extras_require={
        # The embedded default: ONNX Runtime for the detector, LiteRT for MoveNet (Python 3.8-3.13,
        # CPU_PYTHONS in edge/support.py), and OpenCV.
        "cpu": CPU_RUNTIMES + ["opencv-python>=4.5"],
        # The same runtimes without pip's OpenCV: a Jetson's comes from JetPack, built with GStreamer
        # (scripts/install.sh --backend cpu).
        "cpu-runtimes": CPU_RUNTIMES,
        # Frames from GStreamer in-process (the appsink reader). Builds against Debian's
        # libgirepository1.0-dev; 3.51 and newer need girepository-2.0, which Debian 12 lacks.
        # On a Jetson use JetPack's python3-gi instead.
        "gst": ["PyGObject>=3.42,<3.51"],
        # TensorRT comes with JetPack (python3-libnvinfer); pycuda or cuda-python moves the data.
        # The learned sequence cue (a 31 KB GRU) runs on ONNX Runtime's CPU build: aarch64 wheels for
        # Python 3.8+ (JetPack 5 and 6); on JetPack 4.6's Python 3.6 the cue is off, said in the log and health.
        "jetson": ["pycuda>=2021.1", "onnxruntime>=1.15; python_version>='3.8'"],
        # The engine build script: checkpoints to ONNX (fall-edge build-engines). On a Jetson use
        # NVIDIA's PyTorch wheel for the JetPack release instead of PyPI's.
        # onnx 1.11 is the last with a Python 3.6 wheel (JetPack 4.6); checker.check_model is all that is used.
        "build": ["torch>=1.10", "onnx>=1.12; python_version>='3.7'", "onnx>=1.10,<1.12; python_version<'3.7'"],
        # The control room's web console (fall-edge console): a server next to the broker, Python 3.8+.
        "console": ["flask>=2.2", "waitress>=2.1"],
        # selenium drives Debian's chromium through its chromium-driver in the console's tests.
        "dev": ["pytest>=7", "ruff>=0.5", "scikit-image>=0.19", "hypothesis>=6", "vermin>=1.6", "selenium>=4.10",
                "flask>=2.2", "waitress>=2.1"],
    },
    entry_points={"console_scripts": ["fall-edge=edge.cli:main"]},
    include_package_data=False,
    package_data={"edge.console": ["templates/*.html", "static/*.js"]},  # the web console's pages
    license="Apache-2.0",
)

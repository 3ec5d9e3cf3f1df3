#!/usr/bin/env python3
"""Build ONNX files and TensorRT engines from checkpoints (same as `fall-edge build-engines`).

    scripts/build_engines.py --source yolov5s.pt --precision int8 --calib-dir calib/
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.cli import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["build-engines", *sys.argv[1:]]))

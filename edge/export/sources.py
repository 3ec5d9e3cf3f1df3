"""What an engine build needs from its source file, checked without building: the doctor asks
before the service's first start, which would otherwise fail into systemd's start limit."""

import importlib.util
from pathlib import Path
from typing import Optional

from edge.errors import ModelError

# The suffixes build-engines takes, and the Python modules each needs besides TensorRT.
SOURCE_IMPORTS = {".onnx": (), ".pth": ("torch",), ".pt": ("torch",)}


def build_source_problem(source: Path) -> Optional[str]:
    """None when an engine can be built from `source` here, else the reason with the fix."""
    suffix = source.suffix.lower()
    if suffix not in SOURCE_IMPORTS:
        return f"build.source {source} is not a .onnx, .pth or .pt file: point it at the model's weights"
    if not source.is_file():
        return f"build.source {source} not found: put the weights there (README, \"Deploy on a Jetson\")"
    if suffix == ".pth":
        from edge.modelstore.trt_pose_weights import verify_trt_pose_weights

        try:
            verify_trt_pose_weights(source)
        except ModelError as exc:
            return str(exc)
    missing = [name for name in SOURCE_IMPORTS[suffix] if importlib.util.find_spec(name) is None]
    if missing:
        return (f"building from {source.name} needs {', '.join(missing)}, which is not installed: install the "
                f"PyTorch wheel for this JetPack (README, \"Deploy on a Jetson\"), or export the ONNX on another "
                f"machine (fall-edge build-engines --source {source.name} --onnx-only) and set build.source to it")
    return None

"""What an engine build needs from its source file, checked without building: the doctor asks
before the service's first start, which would otherwise fail into systemd's start limit."""

import importlib.util
import subprocess
import sys
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
    for name in SOURCE_IMPORTS[suffix]:
        broken = import_problem(name)
        if broken:
            return (f"building from {source.name} needs {name}, which is installed but does not import ({broken}): "
                    f"install the system libraries its wheel needs (README, \"Deploy on a Jetson\"), or export the "
                    f"ONNX on another machine (fall-edge build-engines --source {source.name} --onnx-only) and "
                    f"set build.source to it")
    return None


def import_problem(module: str, timeout_s: float = 120.0) -> Optional[str]:
    """None when `module` imports in a fresh interpreter (as the build will import it), else the
    last line of its error. Found is not enough: NVIDIA's torch wheels are found and then fail on
    a missing libopenblas or libcusparseLt, and the service crash-looped on that."""
    try:
        result = subprocess.run([sys.executable, "-c", f"import {module}"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"importing it took over {timeout_s:.0f} s"
    if result.returncode == 0:
        return None
    return (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]

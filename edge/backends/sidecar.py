"""The JSON file next to every engine (`x.engine` -> `x.engine.json`): what it was built from
and for. A TensorRT engine only runs on the TensorRT version and the GPU it was built with,
so the daemon checks this before loading one and says how to rebuild it."""


import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge.errors import ModelError

SIDECAR_SUFFIX = ".json"


@dataclass
class EngineInfo:
    engine_file: str
    source_file: str  # the .pt/.pth/.onnx it was built from
    source_sha256: str
    onnx_sha256: str
    kind: str  # yolo | trt_pose
    precision: str  # what was built: fp32 | fp16 | int8
    requested_precision: str
    input_name: str
    input_shape: List[int]
    output_names: List[str]
    tensorrt_version: str
    device_name: str
    compute_capability: str
    built_at: str
    calibration_images: int = 0
    calibration_cache: str = ""
    class_names: List[str] = field(default_factory=list)
    calibrator: str = ""  # INT8: minmax | entropy
    fp16_layers: List[str] = field(default_factory=list)  # INT8: the YOLO head's layers pinned to FP16
    # INT8 against an FP16 reference on held-back calibration frames (edge/export/agreement.py),
    # and the floor it was held to; an engine refused for INT8 is the FP16 one, with a note.
    agreement: Dict[str, Any] = field(default_factory=dict)
    min_agreement: float = 0.0
    notes: List[str] = field(default_factory=list)  # fallbacks taken, e.g. no fast INT8 on this GPU


def sidecar_path(engine: Path) -> Path:
    return Path(str(engine) + SIDECAR_SUFFIX)


def write_sidecar(engine: Path, info: EngineInfo) -> Path:
    path = sidecar_path(engine)
    path.write_text(json.dumps(asdict(info), indent=2) + "\n", encoding="utf-8")
    return path


def read_sidecar(engine: Path) -> EngineInfo:
    path = sidecar_path(engine)
    if not path.is_file():
        raise ModelError(f"engine {engine} has no {path.name}: it was not built by `fall-edge build-engines`; "
                         f"rebuild it with that command so its TensorRT version and GPU are known")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read ({exc}): rebuild the engine with `fall-edge build-engines`") from None
    known = {f.name for f in fields(EngineInfo)}
    required = [f.name for f in fields(EngineInfo)
                if f.name not in data and f.default is MISSING and f.default_factory is MISSING]
    if required:
        raise ModelError(f"{path} lacks {', '.join(required)}: rebuild the engine with `fall-edge build-engines`")
    return EngineInfo(**{k: v for k, v in data.items() if k in known})


def check_engine_fits(info: EngineInfo, engine: Path, tensorrt_version: str, device_name: str,
                      compute_capability: str, onnx_sha256: Optional[str] = None) -> None:
    """Refuse an engine built for another TensorRT or GPU (it would fail to load, or worse,
    load and misbehave), with the command that rebuilds it."""
    rebuild = f"rebuild it on this device: fall-edge build-engines --source {info.source_file} --out {engine}"
    if info.tensorrt_version != tensorrt_version:
        raise ModelError(f"engine {engine} was built with TensorRT {info.tensorrt_version}, this device has "
                         f"{tensorrt_version}: {rebuild}")
    if info.compute_capability != compute_capability or info.device_name != device_name:
        raise ModelError(f"engine {engine} was built for {info.device_name} (sm {info.compute_capability}), "
                         f"this device is {device_name} (sm {compute_capability}): {rebuild}")
    if onnx_sha256 is not None and info.onnx_sha256 != onnx_sha256:
        raise ModelError(f"engine {engine} was built from another version of its ONNX file: {rebuild}")


def describe_engine(info: EngineInfo) -> str:
    return (f"{Path(info.engine_file).name}: {info.kind} {info.precision} {info.input_shape} "
            f"TensorRT {info.tensorrt_version} on {info.device_name} (sm {info.compute_capability})")

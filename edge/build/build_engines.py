"""`fall-edge build-engines` (also scripts/build_engines.py): a checkpoint to a TensorRT engine.

    YOLOv5 .pt    -> rebuilt network (edge/build/yolov5_net.py) -> ONNX [1,N,5+nc]
    YOLOv8 .pt    -> ultralytics' own exporter (when ultralytics is installed)
    trt_pose .pth -> rebuilt network (edge/build/trt_pose_net.py) -> ONNX cmap, paf
    .onnx         -> used as it is

then the parity check (ONNX Runtime against PyTorch, random and real inputs), then the
engine (edge/build/engine.py) with its sidecar. Without TensorRT (any machine but the
Jetson) it stops after the ONNX step and says so.
"""


import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import numpy as np

from edge.build.calibration import IMAGE_SUFFIXES
from edge.build.onnx_export import ParityReport, check_parity, export_onnx
from edge.decoding.preprocess import model_input
from edge.errors import FallEdgeError, ModelError

logger = logging.getLogger(__name__)

YOLO_INPUT_NAME, YOLO_OUTPUTS = "images", ["output0"]
TRT_POSE_INPUT_NAME, TRT_POSE_OUTPUTS = "input", ["cmap", "paf"]


@dataclass
class BuildRequest:
    source: Path
    out: Optional[Path] = None  # the .engine; default engines/<source stem>_<precision>.engine
    precision: str = "fp16"
    arch: str = ""  # trt_pose architecture; default from the file name
    imgsz: int = 640  # YOLO input size
    calib_dir: Optional[Path] = None
    calib_limit: int = 0
    parity_images: int = 8  # real inputs taken from calib_dir (or vtest.avi) for the parity check
    random_inputs: int = 3
    onnx_only: bool = False
    workspace_mb: int = 1024
    calibrator: Optional[str] = None  # minmax | entropy; default per kind (edge/build/calibration.py)


@dataclass
class BuildResult:
    onnx: Path
    kind: str
    parity: Optional[ParityReport]
    engine: Optional[Path]
    class_names: List[str]


def _step(number: int, text: str) -> None:
    sys.stderr.write(f"[{number}/3] {text}\n")


def guess_trt_pose_arch(path: Path) -> str:
    from edge.build.trt_pose_net import ARCHITECTURES

    for name in ARCHITECTURES:
        if name in path.name:
            return name
    raise FallEdgeError(f"cannot tell the trt_pose architecture from the name {path.name}: pass --arch "
                        f"{' or '.join(ARCHITECTURES)}")


def real_inputs(kind: str, size: int, calib_dir: Optional[Path], count: int) -> List[np.ndarray]:
    """Real images for the parity check: the calibration folder, else frames of vtest.avi."""
    import cv2

    images: List[np.ndarray] = []
    if calib_dir is not None and calib_dir.is_dir():
        for path in sorted(p for p in calib_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:count]:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                images.append(image)
    else:
        from edge.eval.bench import DEFAULT_BENCH_VIDEO

        video = Path(DEFAULT_BENCH_VIDEO)
        if video.is_file():
            capture = cv2.VideoCapture(str(video))
            while len(images) < count:
                ok, frame = capture.read()
                if not ok:
                    break
                images.append(frame)
                capture.set(cv2.CAP_PROP_POS_FRAMES, len(images) * 90)
            capture.release()
    return [model_input(kind, image, size) for image in images]


def _export(request: BuildRequest, onnx_path: Path):
    """(torch model or None, kind, class names, input size), with the ONNX written."""
    suffix = request.source.suffix.lower()
    if suffix == ".pth":
        from edge.build.trt_pose_net import ARCHITECTURES, load_trt_pose

        arch = request.arch or guess_trt_pose_arch(request.source)
        model = load_trt_pose(arch, request.source)
        size = ARCHITECTURES[arch].input_size
        export_onnx(model, (1, 3, size, size), onnx_path, TRT_POSE_INPUT_NAME, TRT_POSE_OUTPUTS)
        return model, "trt_pose", [], size
    if suffix == ".pt":
        from edge.build.yolov5_net import check_input_size, load_yolov5

        size = check_input_size(request.imgsz)
        try:
            checkpoint = load_yolov5(request.source)
        except ModelError as exc:
            if "YOLOv8" not in str(exc):
                raise
            return _export_yolov8(request, onnx_path)
        export_onnx(checkpoint.model, (1, 3, size, size), onnx_path, YOLO_INPUT_NAME, YOLO_OUTPUTS)
        return checkpoint.model, "yolo", checkpoint.class_names, size
    if suffix == ".onnx":
        return None, "", [], 0
    raise FallEdgeError(f"{request.source}: expected a YOLOv5/YOLOv8 .pt, a trt_pose .pth or an .onnx")


def _export_yolov8(request: BuildRequest, onnx_path: Path) -> tuple:
    try:
        from ultralytics import YOLO
    except ImportError:
        raise FallEdgeError(f"{request.source} is not a YOLOv5 checkpoint; YOLOv8 .pt files need "
                            f"`pip install ultralytics` (or export to ONNX elsewhere and pass the .onnx)") from None
    model = YOLO(str(request.source))
    exported = Path(model.export(format="onnx", imgsz=request.imgsz, opset=13, dynamic=False, simplify=False))
    exported.replace(onnx_path)
    names = model.names
    return None, "yolo", [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names), request.imgsz


def onnx_kind(onnx_path: Path) -> tuple:
    """('yolo' or 'trt_pose', input size) of a ready ONNX file, from its inputs and outputs."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape
    outputs = session.get_outputs()
    channels = sorted(o.shape[1] for o in outputs if len(o.shape) == 4)
    kind = "trt_pose" if channels == [18, 42] else "yolo"
    return kind, int(shape[-1]) if isinstance(shape[-1], int) else 0


def build(request: BuildRequest) -> BuildResult:
    source = request.source
    if not source.is_file():
        raise FallEdgeError(f"{source} not found: pass the .pt, .pth or .onnx to build from")
    engine_path = request.out or Path("engines") / f"{source.stem}_{request.precision}.engine"
    onnx_path = source if source.suffix.lower() == ".onnx" else engine_path.with_suffix(".onnx")
    _step(1, f"{source} -> ONNX")
    model, kind, class_names, size = _export(request, onnx_path)
    if not kind:
        kind, size = onnx_kind(onnx_path)
    sys.stderr.write(f"  {onnx_path} ({kind}, input {size}x{size})\n")

    parity = None
    if model is not None:
        _step(2, "parity: ONNX Runtime against PyTorch")
        inputs = real_inputs(kind, size, request.calib_dir, request.parity_images)
        parity = check_parity(model, onnx_path, request.random_inputs, inputs)
        sys.stderr.write(f"  max abs difference: random {parity.random_max_abs_diff:.2e}, real "
                         f"{parity.real_max_abs_diff:.2e} ({parity.real_inputs} images); output ranges "
                         f"{', '.join(f'{r:.3g}' for r in parity.output_ranges)}\n")
        tolerance = 1e-3 * max(1.0, max(parity.output_ranges, default=1.0))
        if parity.worst() > tolerance:
            raise ModelError(f"the ONNX export of {source} differs from PyTorch by {parity.worst():.3g} "
                             f"(tolerance {tolerance:.3g}): do not deploy it")
    else:
        _step(2, "parity: skipped (no PyTorch model to compare with)")

    if request.onnx_only:
        _step(3, "TensorRT engine: skipped (--onnx-only)")
        return BuildResult(onnx_path, kind, parity, None, class_names)
    _step(3, f"TensorRT engine {engine_path} ({request.precision})")
    from edge.build.engine import build_engine, import_tensorrt

    try:
        import_tensorrt()
    except ModelError as exc:
        raise ModelError(f"{exc}. The ONNX is ready at {onnx_path}: copy it to the Jetson and run "
                         f"fall-edge build-engines --source {onnx_path.name} there") from None
    info = build_engine(onnx_path, engine_path, request.precision, kind, source, request.calib_dir,
                        request.calib_limit, workspace_mb=request.workspace_mb, class_names=class_names,
                        calibrator=request.calibrator)
    sys.stderr.write(f"  built {engine_path}: {info.precision}, TensorRT {info.tensorrt_version}, "
                     f"{info.device_name}\n")
    return BuildResult(onnx_path, kind, parity, engine_path, class_names)

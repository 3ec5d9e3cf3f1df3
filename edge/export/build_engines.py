"""`fall-edge build-engines` (also scripts/build_engines.py): a checkpoint to a TensorRT engine.

    YOLOv5 .pt    -> rebuilt network (edge/export/yolov5_net.py) -> ONNX [1,N,5+nc]
    YOLOv8 .pt    -> ultralytics' own exporter (when ultralytics is installed)
    trt_pose .pth -> rebuilt network (edge/export/trt_pose_net.py) -> ONNX cmap, paf
    .onnx         -> used as it is

then the parity check (ONNX Runtime against PyTorch, random and real inputs), then the
engine (edge/export/engine.py) with its sidecar. Without TensorRT (any machine but the
Jetson) it stops after the ONNX step and says so.
"""


import itertools
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from edge.backends.sidecar import EngineInfo, read_sidecar, sidecar_path, write_sidecar
from edge.config import DetectorConfig, PoseConfig
from edge.decoding.preprocess import model_input
from edge.errors import FallEdgeError, ModelError
from edge.export.agreement import Agreement, compare_models
from edge.export.calibration import CalibrationBatches, image_files
from edge.export.onnx_export import ParityReport, check_parity, export_onnx
from edge.modelstore import verify_model_file

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
    calibrator: Optional[str] = None  # minmax | entropy; default per kind (edge/export/calibration.py)
    # INT8: checked against an FP16 engine on every HOLDOUT_EVERY-th calibration image, kept
    # back from calibration; under this agreement the FP16 engine is kept instead (0: no check).
    min_agreement: float = 0.85
    detector: Optional[DetectorConfig] = None  # the classes and thresholds the check runs with
    pose: Optional[PoseConfig] = None


@dataclass
class BuildResult:
    onnx: Path
    kind: str
    parity: Optional[ParityReport]
    engine: Optional[Path]
    class_names: List[str]


def _step(number: int, text: str) -> None:
    logger.info(f"[{number}/3] {text}")


def guess_trt_pose_arch(path: Path) -> str:
    from edge.export.trt_pose_net import ARCHITECTURES

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
        for path in image_files(calib_dir)[:count]:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is not None:
                images.append(image)
    else:
        from edge.capture.uri import SAMPLE_VIDEO

        if SAMPLE_VIDEO.is_file():
            from edge.capture.opencv_source import iter_video_frames

            images = list(itertools.islice(iter_video_frames(SAMPLE_VIDEO, 90, seek=True), count))
    return [model_input(kind, image, size) for image in images]


def _onnxruntime_here() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _needs_torch(source: Path) -> None:
    """A checkpoint (.pt, .pth) is turned into ONNX with PyTorch: without it, one line saying so
    (it ended in a ModuleNotFoundError traceback from edge/export/yolov5_net.py)."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise FallEdgeError(f"{source.name} is a PyTorch checkpoint and PyTorch cannot be imported here ({exc}): "
                            "install it (on a Jetson, NVIDIA's wheel for its JetPack: README 'Deploy on a "
                            "Jetson'), or build from an ONNX file exported elsewhere (--source model.onnx)") from None


def _export(request: BuildRequest, onnx_path: Path):
    """(torch model or None, kind, class names, input size), with the ONNX written."""
    suffix = request.source.suffix.lower()
    if suffix in (".pt", ".pth"):
        _needs_torch(request.source)
    if suffix == ".pth":
        from edge.export.trt_pose_net import ARCHITECTURES, load_trt_pose
        from edge.modelstore.trt_pose_weights import verify_trt_pose_weights

        verify_trt_pose_weights(request.source)  # trt_pose's own weights: by git blob id, before use

        arch = request.arch or guess_trt_pose_arch(request.source)
        model = load_trt_pose(arch, request.source)
        size = ARCHITECTURES[arch].input_size
        export_onnx(model, (1, 3, size, size), onnx_path, TRT_POSE_INPUT_NAME, TRT_POSE_OUTPUTS)
        return model, "trt_pose", [], size
    if suffix == ".pt":
        from edge.export.yolov5_net import check_input_size, load_yolov5

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
        verify_model_file(request.source)  # a catalogued model (models/manifest.json): its sha256, before use
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


HOLDOUT_EVERY = 5  # one calibration image in five is kept back for the INT8 agreement check


def int8_verdict(agreement: Agreement, floor: float) -> Tuple[bool, str]:
    """Keep the INT8 engine? With the line that says so."""
    if agreement.passes(floor):
        return True, f"{agreement.line()}: at or above {floor:g}, INT8 kept"
    return False, (f"{agreement.line()}: under the floor {floor:g}, so the INT8 engine is refused and the FP16 "
                   f"one kept; more varied calibration frames from the site (fall-edge calib-frames) or "
                   f"--calibrator entropy may do better")


def _check_int8(request: BuildRequest, info: EngineInfo, onnx_path: Path, engine_path: Path, kind: str,
                source: Path, class_names: List[str]) -> EngineInfo:
    """Build the FP16 reference, compare on the held-back frames, keep INT8 or fall back to FP16."""
    from edge.export.engine import build_engine

    batches = CalibrationBatches(request.calib_dir, kind, tuple(info.input_shape), request.calib_limit,
                                 HOLDOUT_EVERY)
    reference_path = engine_path.with_name(f"{engine_path.stem}.fp16-reference.engine")
    logger.info(f"INT8 agreement: FP16 reference {reference_path.name}, {len(batches.held_back)} "
                     f"held-back frames")
    build_engine(onnx_path, reference_path, "fp16", kind, source, workspace_mb=request.workspace_mb,
                 class_names=class_names)
    if kind == "yolo":
        settings = request.detector or DetectorConfig()
        settings = replace(settings, class_names=list(class_names)) if class_names else settings
    else:
        settings = request.pose or PoseConfig()
    # Both engines are loaded inside and released on return, before the files move.
    agreement = compare_models(kind, settings, [(reference_path, "tensorrt"), (engine_path, "tensorrt")],
                               batches.held_back_images())
    keep, message = int8_verdict(agreement, request.min_agreement)
    logger.info(f"{message}")
    if keep:
        reference_path.unlink()
        sidecar_path(reference_path).unlink()
        info = replace(info, agreement=agreement.as_dict(), min_agreement=request.min_agreement)
    else:
        logger.warning("%s: %s", engine_path.name, message)
        os.replace(reference_path, engine_path)
        sidecar_path(reference_path).unlink()
        info = replace(read_sidecar(engine_path), engine_file=str(engine_path), requested_precision="int8",
                       agreement=agreement.as_dict(), min_agreement=request.min_agreement,
                       notes=info.notes + [message])
    write_sidecar(engine_path, info)
    return info


def build(request: BuildRequest) -> BuildResult:
    source = request.source
    if not source.is_file():
        raise FallEdgeError(f"{source} not found: pass the .pt, .pth or .onnx to build from")
    engine_path = request.out or Path("engines") / f"{source.stem}_{request.precision}.engine"
    onnx_path = source if source.suffix.lower() == ".onnx" else engine_path.with_suffix(".onnx")
    _step(1, f"{source} -> ONNX")
    model, kind, class_names, size = _export(request, onnx_path)
    if kind:
        logger.info(f"{onnx_path} ({kind}, input {size}x{size})")

    parity = None
    if model is not None and not _onnxruntime_here():
        # JetPack 4.6: the only cp36 aarch64 ONNX Runtime wheel needs a newer numpy than the release
        # allows, so the .pth build stopped here for good. The export's numerics are checked against
        # PyTorch in CI (tests/test_build.py, the same code on x86); the engine is built all the same.
        _step(2, "parity: skipped (ONNX Runtime is not installed here; the export is checked against PyTorch "
                 "in CI)")
    elif model is not None:
        _step(2, "parity: ONNX Runtime against PyTorch")
        inputs = real_inputs(kind, size, request.calib_dir, request.parity_images)
        parity = check_parity(model, onnx_path, request.random_inputs, inputs)
        logger.info(f"max abs difference: random {parity.random_max_abs_diff:.2e}, real "
                         f"{parity.real_max_abs_diff:.2e} ({parity.real_inputs} images); output ranges "
                         f"{', '.join(f'{r:.3g}' for r in parity.output_ranges)}")
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
    from edge.backends.tensorrt_runtime import import_tensorrt
    from edge.export.engine import build_engine

    try:
        import_tensorrt()
    except ModelError as exc:
        raise ModelError(f"{exc}. The ONNX is ready at {onnx_path}: copy it to the Jetson and run "
                         f"fall-edge build-engines --source {onnx_path.name} there") from None
    checked = request.precision == "int8" and request.min_agreement > 0 and request.calib_dir is not None
    info = build_engine(onnx_path, engine_path, request.precision, kind, source, request.calib_dir,
                        request.calib_limit, workspace_mb=request.workspace_mb, class_names=class_names,
                        calibrator=request.calibrator, holdout_every=HOLDOUT_EVERY if checked else 0)
    kind = info.kind  # a ready .onnx's kind is read by build_engine from the parsed network
    if info.precision == "int8" and request.min_agreement > 0:
        if checked:
            info = _check_int8(request, info, onnx_path, engine_path, kind, source, class_names)
        else:
            logger.warning("%s: INT8 not checked against FP16 (a calibration table was reused; pass --calib-dir)",
                           engine_path.name)
    logger.info(f"built {engine_path}: {info.precision}, TensorRT {info.tensorrt_version}, "
                     f"{info.device_name}")
    return BuildResult(onnx_path, kind, parity, engine_path, class_names)

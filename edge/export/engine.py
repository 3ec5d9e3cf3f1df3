"""Step 2 of an engine build: ONNX to a serialized TensorRT engine with the TensorRT Python
API, FP32, FP16 or INT8 (MinMax or entropy calibration; a YOLO head kept in FP16), for TensorRT
8.x (JetPack 4.6 and 5) and 10.x (JetPack 6). Runs on the Jetson itself: an engine only runs
where it was built."""


import datetime
import logging
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from tqdm import tqdm

from edge.backends.sidecar import EngineInfo, write_sidecar
from edge.backends.tensorrt_runtime import import_tensorrt, trt_major
from edge.errors import ModelError
from edge.export.calibration import (
    CalibrationBatches,
    CalibrationCache,
    calibration_key,
    default_calibrator,
    make_calibrator,
)
from edge.export.head import head_prefix, in_head
from edge.modelstore.fetch import sha256_of

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
# Tensor cores for INT8 from sm 6.1; the Jetson Nano (sm 5.3) has fast FP16 but no fast INT8.
_FAST_INT8_FROM = (6, 1)
_FAST_FP16_FROM = (5, 3)


def kind_from_outputs(output_shapes: Sequence[Sequence[int]]) -> str:
    """'yolo' or 'trt_pose' from a network's output shapes: trt_pose has two 4-D outputs of 18
    (confidence maps) and 42 (part affinity fields) channels."""
    channels = sorted(int(shape[1]) for shape in output_shapes if len(shape) == 4)
    return "trt_pose" if channels == [18, 42] else "yolo"


def choose_precision(requested: str, fast_fp16: bool, fast_int8: bool) -> Tuple[str, List[str]]:
    """The precision to build and the warnings to give: INT8 falls back to FP16 on GPUs without
    fast INT8 (Jetson Nano), FP16 to FP32 on GPUs without fast FP16."""
    if requested not in PRECISIONS:
        raise ModelError(f"precision '{requested}' is not one of {', '.join(PRECISIONS)}")
    notes: List[str] = []
    precision = requested
    if precision == "int8" and not fast_int8:
        precision = "fp16"
        notes.append("this GPU has no fast INT8 (e.g. Jetson Nano): building FP16 instead")
    if precision == "fp16" and not fast_fp16:
        precision = "fp32"
        notes.append("this GPU has no fast FP16: building FP32 instead")
    return precision, notes


def _capability(compute_capability: str) -> Tuple[int, int]:
    major, _, minor = compute_capability.partition(".")
    return int(major), int(minor or 0)


def _platform_speed(builder: Any, compute_capability: str) -> Tuple[bool, bool]:
    """(fast FP16, fast INT8): the builder's own answer where this TensorRT still has it."""
    capability = _capability(compute_capability)
    fast_fp16 = getattr(builder, "platform_has_fast_fp16", capability >= _FAST_FP16_FROM)
    fast_int8 = getattr(builder, "platform_has_fast_int8", capability >= _FAST_INT8_FROM)
    return bool(fast_fp16), bool(fast_int8)


@contextmanager
def _build_clock(what: str) -> Iterator[None]:
    """A running clock while TensorRT builds (minutes on a Jetson, silent before TensorRT 10):
    tqdm redraws it each second on a terminal; elsewhere (journald, a first-start build under
    systemd, keeps lines and not redraws) a log line says the time every 15 s."""
    terminal = sys.stderr.isatty()
    done = threading.Event()
    started = time.monotonic()
    with tqdm(desc=what, bar_format="{desc}: {elapsed}", file=sys.stderr, disable=not terminal, leave=False) as bar:
        def tick() -> None:
            while not done.wait(1.0 if terminal else 15.0):
                if terminal:
                    bar.refresh()
                else:
                    logger.info("%s: %s", what, tqdm.format_interval(time.monotonic() - started))

        clock = threading.Thread(target=tick, daemon=True)
        clock.start()
        try:
            yield
        finally:
            done.set()
            clock.join()


def _progress_monitor(trt: Any) -> Optional[Any]:
    """TensorRT 10's build progress (phases and steps) printed to stderr; None before 10."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class PhasePrinter(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            if parent_phase is None:  # nested phases are many and short; the top level tells enough
                logger.info(f"{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            pass

    return PhasePrinter()


def keep_head_in_fp16(trt: Any, network: Any, config: Any) -> List[str]:
    """Pin the YOLO head's layers (edge/export/head.py) to FP16 in an INT8 build and tell the
    builder to obey it (OBEY_PRECISION_CONSTRAINTS, TensorRT 8.2+; STRICT_TYPES before).
    Layers with non-float outputs (shapes, indices) and constants are left to the builder.
    Returns the names of the layers pinned."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    prefix = head_prefix(layer.name for layer in layers)
    kept = []
    for layer in layers:
        if not in_head(layer.name, prefix) or layer.type == trt.LayerType.CONSTANT:
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(output.dtype not in (trt.float32, trt.float16) for output in outputs):
            continue
        layer.precision = trt.float16
        for index in range(layer.num_outputs):
            layer.set_output_type(index, trt.float16)
        kept.append(layer.name)
    if kept:
        obey = getattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS", None)
        config.set_flag(obey if obey is not None else trt.BuilderFlag.STRICT_TYPES)
    return kept


def build_engine(onnx_path: Path, engine_path: Path, requested_precision: str, kind: str, source_file: Path,
                 calibration_dir: Optional[Path] = None, calibration_limit: int = 0,
                 cache_path: Optional[Path] = None, workspace_mb: int = 1024,
                 class_names: Optional[List[str]] = None, calibrator: Optional[str] = None,
                 holdout_every: int = 0) -> EngineInfo:
    """Build and write the engine and its sidecar; returns the sidecar's contents. An empty kind
    (a ready .onnx) is read from the network's shapes; the sidecar records it."""
    from edge.backends.cuda_memory import cuda_memory

    trt = import_tensorrt()
    cuda = cuda_memory()
    device_name, compute_capability = cuda.device()
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    # TensorRT 8 needs explicit batch asked for; 10 has nothing else and deprecates the flag.
    flags = 0 if trt_major(trt) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    logger.info(f"parsing {onnx_path}")
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT cannot parse {onnx_path}: {'; '.join(errors)[:300]}")
    model_input = network.get_input(0)
    input_shape = [int(d) for d in model_input.shape]
    if any(d < 1 for d in input_shape):
        raise ModelError(f"{onnx_path} has a dynamic input {input_shape}: export it with static shapes")
    output_names = [network.get_output(i).name for i in range(network.num_outputs)]
    if not kind:  # a ready .onnx: told apart by its shapes, from the network TensorRT just parsed
        kind = kind_from_outputs([list(network.get_output(i).shape) for i in range(network.num_outputs)])
        logger.info(f"{onnx_path}: {kind}, input {input_shape[-1]}x{input_shape[-1]}")

    config = builder.create_builder_config()
    workspace = int(workspace_mb) << 20
    if hasattr(config, "set_memory_pool_limit"):  # TensorRT 8.4 and newer
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:
        config.max_workspace_size = workspace
    precision, notes = choose_precision(requested_precision, *_platform_speed(builder, compute_capability))
    for note in notes:
        logger.warning("%s: %s", engine_path.name, note)
    onnx_sha256 = sha256_of(Path(onnx_path))
    algorithm = calibrator or default_calibrator(kind)
    cache = CalibrationCache(cache_path or engine_path.with_suffix(".calib"),
                             key=calibration_key(onnx_sha256, kind, input_shape, algorithm),
                             recalibrate=calibration_dir is not None)
    batches: Optional[CalibrationBatches] = None
    fp16_layers: List[str] = []
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 engines keep FP16 for layers INT8 cannot run
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if calibration_dir is None and not cache.usable():
            raise ModelError(f"INT8 needs calibration images (--calib-dir): the calibration cache {cache.path} "
                             f"cannot be used ({cache.mismatch()})")
        if calibration_dir is not None:
            batches = CalibrationBatches(calibration_dir, kind, tuple(input_shape), calibration_limit, holdout_every)
            logger.info(f"INT8 calibration ({algorithm}) on {len(batches) * batches.batch_size} images "
                             f"from {calibration_dir}")
        config.int8_calibrator = make_calibrator(trt, cuda, batches, cache, input_shape[0], algorithm)
        if kind == "yolo":
            fp16_layers = keep_head_in_fp16(trt, network, config)
            logger.info(f"{len(fp16_layers)} head layers kept in FP16")
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor
    with _build_clock(f"building {engine_path.name} ({precision})"):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT could not build {engine_path.name}: see the TensorRT messages above "
                         f"(a larger --workspace-mb often helps)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(serialized))
    built_from_onnx = Path(source_file).resolve() == Path(onnx_path).resolve()  # no need to hash it twice
    source_sha256 = onnx_sha256 if built_from_onnx else sha256_of(Path(source_file))
    info = EngineInfo(
        engine_file=str(engine_path), source_file=str(source_file), source_sha256=source_sha256,
        onnx_sha256=onnx_sha256, kind=kind, precision=precision, requested_precision=requested_precision,
        input_name=model_input.name, input_shape=input_shape, output_names=output_names,
        tensorrt_version=str(trt.__version__), device_name=device_name, compute_capability=compute_capability,
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # Images that made the table: fed this build, else those the reused cache was made from.
        calibration_images=(batches.images_given if batches is not None and batches.images_given
                            else int(cache.meta().get("images", 0)) if precision == "int8" else 0),
        calibration_cache=str(cache.path) if precision == "int8" else "",
        calibrator=algorithm if precision == "int8" else "", fp16_layers=fp16_layers,
        class_names=list(class_names or []), notes=notes)
    write_sidecar(engine_path, info)
    return info


"""The CPU's analogue of a TensorRT INT8 engine: an ONNX file quantized with ONNX Runtime's
static quantization (QDQ, per-channel weights), calibrated on the same images and with the
same preprocessing as the engines.

Quantizing a YOLO detector whole ruins it: the decode at the end of the head mixes box
coordinates in pixels (hundreds) with scores in 0..1 in one tensor, and one INT8 scale
cannot hold both. So the head's nodes stay in float (edge/export/head.py, the same rule as the
TensorRT INT8 build; for the YOLOv8 fall model, `/model.22/`).

Calibration is MinMax: ONNX Runtime's histogram methods (Percentile, Entropy) keep every
activation of every image and were killed for memory here (24 GB) after 50 images at 640.
"""


import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from edge.errors import FallEdgeError
from edge.export.calibration import CalibrationBatches
from edge.export.head import head_prefix
from edge.modelstore import verify_model_file

logger = logging.getLogger(__name__)


def _reader(batches: CalibrationBatches, input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            batches.reset()

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            batch = batches.next_batch()
            return None if batch is None else {input_name: batch}

    return Reader()


def float_nodes(onnx_path: Path, keep_float_prefixes: Optional[Sequence[str]], kind: str = "yolo") -> List[str]:
    """The nodes kept in float: those under the given prefixes; by default a YOLO's head."""
    import onnx

    names = [node.name for node in onnx.load(str(onnx_path)).graph.node]
    if keep_float_prefixes is None:
        head = head_prefix(names) if kind == "yolo" else ""
        keep_float_prefixes = [head] if head else []
    return [name for name in names if any(name.startswith(p) for p in keep_float_prefixes)]


def quantize_onnx(onnx_path: Path, out_path: Path, calib_dir: Path, kind: str,
                  keep_float_prefixes: Optional[Sequence[str]] = None, calib_limit: int = 0) -> Path:
    """Write the INT8 ONNX; returns its path. keep_float_prefixes None: the YOLO head."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    verify_model_file(onnx_path)  # a catalogued model: its sha256, before the INT8 copy is made of it
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    shape = tuple(int(d) for d in model_input.shape)
    batches = CalibrationBatches(calib_dir, kind, shape, calib_limit)
    excluded = float_nodes(onnx_path, keep_float_prefixes, kind)
    if keep_float_prefixes and not excluded:
        raise FallEdgeError(f"no node of {onnx_path} starts with {', '.join(keep_float_prefixes)}: "
                            f"check --keep-float (e.g. /model.22/ for the YOLOv8 head)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = out_path.with_suffix(".prep.onnx")
    logger.info(f"[1/2] preparing {onnx_path} (shape inference, graph optimisation)")
    quant_pre_process(str(onnx_path), str(prepared))
    logger.info(f"[2/2] calibrating on {len(batches) * batches.batch_size} images, "
                     f"{len(excluded)} nodes kept in float")
    try:
        quantize_static(str(prepared), str(out_path), _reader(batches, model_input.name),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=excluded)
    finally:
        prepared.unlink(missing_ok=True)
    logger.info("wrote %s", out_path)
    return out_path

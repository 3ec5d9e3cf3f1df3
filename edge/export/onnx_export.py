"""Step 1 of an engine build: a PyTorch network to a static-shape ONNX file, then a check
that ONNX Runtime gives the same outputs as PyTorch on random and real inputs."""


import inspect
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from edge.errors import ModelError

logger = logging.getLogger(__name__)

# Opset 13 is read by every TensorRT from 8.0 (JetPack 4.6) to 10.x, and by ONNX Runtime.
DEFAULT_OPSET = 13


@dataclass
class ParityReport:
    """Largest absolute difference between ONNX Runtime and PyTorch, per input kind."""

    random_max_abs_diff: float
    real_max_abs_diff: float  # nan when no real inputs were given
    real_inputs: int
    output_ranges: List[float] = field(default_factory=list)  # max |value| per output, for scale

    def worst(self) -> float:
        values = [self.random_max_abs_diff] + ([self.real_max_abs_diff] if self.real_inputs else [])
        return max(values)


def export_onnx(model, input_shape: Tuple[int, ...], path: Path, input_name: str, output_names: Sequence[str],
                opset: int = DEFAULT_OPSET) -> Path:
    """Export with static shapes (TensorRT builds the fastest kernels for fixed sizes)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.zeros(*input_shape)
    options = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False  # the TorchScript exporter: static shapes, no onnxscript needed
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-side shape arithmetic
        torch.onnx.export(model, (example,), str(path), input_names=[input_name], output_names=list(output_names),
                          opset_version=opset, do_constant_folding=True, **options)
    _check_onnx(path)
    logger.info("exported %s (opset %d, input %s %s)", path, opset, input_name, list(input_shape))
    return path


def _check_onnx(path: Path) -> None:
    try:
        import onnx
    except ImportError:
        return  # onnx is optional; ONNX Runtime loads the file in the parity check anyway
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise ModelError(f"the exported {path} is not valid ONNX: {str(exc).splitlines()[0][:200]}") from None


def check_parity(model, onnx_path: Path, random_inputs: int, real_inputs: Sequence[np.ndarray],
                 seed: int = 0) -> ParityReport:
    """Run both on `random_inputs` uniform random tensors and on the given real ones."""
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model_input = session.get_inputs()[0]
    shape = [int(d) for d in model_input.shape]
    rng = np.random.default_rng(seed)
    ranges: List[float] = []

    def max_diff(tensor: np.ndarray) -> float:
        onnx_outputs = session.run(None, {model_input.name: tensor})
        with torch.no_grad():
            torch_outputs = model(torch.from_numpy(tensor))
        if isinstance(torch_outputs, torch.Tensor):
            torch_outputs = (torch_outputs,)
        if len(torch_outputs) != len(onnx_outputs):
            raise ModelError(f"{onnx_path} has {len(onnx_outputs)} outputs, PyTorch {len(torch_outputs)}")
        worst = 0.0
        for index, (ours, theirs) in enumerate(zip(onnx_outputs, torch_outputs)):
            theirs = theirs.numpy()
            if ours.shape != theirs.shape:
                raise ModelError(f"{onnx_path} output {index} is {list(ours.shape)}, PyTorch {list(theirs.shape)}")
            worst = max(worst, float(np.abs(ours - theirs).max()))
            peak = float(np.abs(theirs).max())
            if index < len(ranges):
                ranges[index] = max(ranges[index], peak)
            else:
                ranges.append(peak)
        return worst

    random_worst = max((max_diff(rng.random(shape, dtype=np.float32)) for _ in range(random_inputs)), default=0.0)
    real_worst = max((max_diff(np.ascontiguousarray(t, dtype=np.float32)) for t in real_inputs), default=float("nan"))
    return ParityReport(random_worst, real_worst, len(real_inputs), ranges)

"""TensorRT engines (`.engine` made by `fall-edge build-engines`) on the Jetson's GPU.

The engine's sidecar is checked first: an engine built for another TensorRT version or GPU
is refused with the command that rebuilds it. Each input and output gets a pinned host
buffer and a device buffer once; infer() copies in, runs the engine asynchronously on its
own CUDA stream, copies out and waits. Both TensorRT APIs are covered: named I/O tensors
with execute_async_v3 (8.5 and newer, the only one in 10.x) and bindings with
execute_async_v2 (8.0 to 8.4, JetPack 4.6).
"""


import logging
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np

from edge.backends.base import InferenceBackend
from edge.backends.cuda_memory import cuda_memory
from edge.backends.sidecar import check_engine_fits, read_sidecar
from edge.backends.tensorrt_runtime import import_tensorrt
from edge.errors import ModelError

logger = logging.getLogger(__name__)


class _Tensor:
    def __init__(self, name: str, shape: Sequence[int], dtype: np.dtype, is_input: bool, cuda: Any) -> None:
        self.name, self.shape, self.dtype, self.is_input = name, tuple(int(d) for d in shape), dtype, is_input
        if any(d < 1 for d in self.shape):
            raise ModelError(f"engine tensor {name} has a dynamic shape {list(self.shape)}: build it from a "
                             f"static-shape ONNX (fall-edge build-engines does)")
        self.host = cuda.alloc_pinned(self.shape, dtype)
        self.device = cuda.alloc_device(self.host.nbytes)


class TensorRTBackend(InferenceBackend):
    type_name = "tensorrt"

    def __init__(self, model_path: Path, threads: int = 2, input_shape: Optional[Sequence[int]] = None) -> None:
        super().__init__(model_path, threads, input_shape)
        trt = import_tensorrt()
        if not Path(model_path).is_file():
            raise ModelError(f"engine {model_path} not found: build it on this device with "
                             f"`fall-edge build-engines` (README, \"Deploy on a Jetson\")")
        self._cuda = cuda_memory()
        device_name, capability = self._cuda.device()
        self.info = read_sidecar(Path(model_path))
        check_engine_fits(self.info, Path(model_path), str(trt.__version__), device_name, capability)
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._trt_logger)
        self._engine = runtime.deserialize_cuda_engine(Path(model_path).read_bytes())
        if self._engine is None:
            raise ModelError(f"TensorRT could not load {model_path}: rebuild it with `fall-edge build-engines`")
        self._context = self._engine.create_execution_context()
        self._stream = self._cuda.new_stream()
        self._named_tensors = hasattr(self._engine, "num_io_tensors")
        self._tensors = self._named_io(trt) if self._named_tensors else self._bindings_io(trt)
        inputs = [t for t in self._tensors if t.is_input]
        if len(inputs) != 1:
            raise ModelError(f"engine {model_path} has {len(inputs)} inputs; fall-edge models have one")
        self._input = inputs[0]
        self._outputs = [t for t in self._tensors if not t.is_input]
        self._input_shape = self._input.shape
        self._input_dtype = np.dtype(self._input.dtype)

    def _named_io(self, trt: Any) -> List[_Tensor]:
        tensors = []
        for index in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(index)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            tensor = _Tensor(name, self._engine.get_tensor_shape(name),
                             np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))), is_input, self._cuda)
            self._context.set_tensor_address(name, int(tensor.device))
            tensors.append(tensor)
        return tensors

    def _bindings_io(self, trt: Any) -> List[_Tensor]:
        return [_Tensor(self._engine.get_binding_name(index), self._engine.get_binding_shape(index),
                        np.dtype(trt.nptype(self._engine.get_binding_dtype(index))),
                        self._engine.binding_is_input(index), self._cuda)
                for index in range(self._engine.num_bindings)]

    def infer(self, tensor: np.ndarray) -> List[np.ndarray]:
        self._check_input(tensor)
        np.copyto(self._input.host, tensor)
        self._cuda.copy_to_device_async(self._input.device, self._input.host, self._stream)
        handle = self._cuda.stream_handle(self._stream)
        if self._named_tensors:
            ok = self._context.execute_async_v3(handle)
        else:
            ok = self._context.execute_async_v2([int(t.device) for t in self._tensors], handle)
        if not ok:
            raise RuntimeError(f"TensorRT failed to run {self.model_path}")
        for output in self._outputs:
            self._cuda.copy_to_host_async(output.host, output.device, self._stream)
        self._cuda.synchronize(self._stream)
        # Copies: the pinned buffers are overwritten by the next call.
        return [output.host.copy() for output in self._outputs]

    def close(self) -> None:
        """Release the engine and its GPU buffers (cuda-python frees them here; pycuda when collected)."""
        self._context = self._engine = None
        self._tensors, self._outputs, self._input = [], [], None
        self._cuda.close()

"""The few CUDA calls the TensorRT backend and the INT8 calibrator need, through pycuda
(JetPack's usual choice) or, when pycuda is missing, NVIDIA's cuda-python.

Pinned host buffers are numpy arrays; device buffers are objects whose int() is the device
pointer, which is what TensorRT takes.
"""


import ctypes
import logging
from typing import Any, Tuple

import numpy as np

from edge.errors import ModelError

logger = logging.getLogger(__name__)


class PyCudaMemory:
    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.autoinit  # noqa: F401  (creates the context on device 0)
        import pycuda.driver as driver

        self._driver = driver

    def alloc_pinned(self, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self._driver.pagelocked_empty(tuple(shape), dtype)

    def alloc_device(self, nbytes: int) -> Any:
        return self._driver.mem_alloc(max(1, int(nbytes)))

    def new_stream(self) -> Any:
        return self._driver.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def copy_to_device(self, device: Any, host: np.ndarray) -> None:
        self._driver.memcpy_htod(device, np.ascontiguousarray(host))

    def copy_to_device_async(self, device: Any, host: np.ndarray, stream: Any) -> None:
        self._driver.memcpy_htod_async(device, host, stream)

    def copy_to_host_async(self, host: np.ndarray, device: Any, stream: Any) -> None:
        self._driver.memcpy_dtoh_async(host, device, stream)

    def device(self) -> Tuple[str, str]:
        """(GPU name, compute capability such as '8.7')."""
        gpu = self._driver.Device(0)
        major, minor = gpu.compute_capability()
        return gpu.name(), f"{major}.{minor}"


class _DevicePointer:
    def __init__(self, pointer: int, nbytes: int) -> None:
        self.pointer, self.nbytes = int(pointer), nbytes

    def __int__(self) -> int:
        return self.pointer


class CudaPythonMemory:
    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python 12.6 and newer
        except ImportError:
            from cuda import cudart  # older cuda-python
        self._rt = cudart
        self._check(cudart.cudaFree(0), "cudaFree(0)")  # creates the primary context

    def _check(self, result: Any, call: str) -> Any:
        error = result[0] if isinstance(result, tuple) else result
        if int(error) != 0:
            raise ModelError(f"CUDA call {call} failed ({error}): check the GPU driver with nvidia-smi or tegrastats")
        return result[1] if isinstance(result, tuple) and len(result) > 1 else None

    def alloc_pinned(self, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        pointer = self._check(self._rt.cudaMallocHost(max(1, nbytes)), "cudaMallocHost")
        raw = (ctypes.c_char * max(1, nbytes)).from_address(int(pointer))
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def alloc_device(self, nbytes: int) -> Any:
        return _DevicePointer(self._check(self._rt.cudaMalloc(max(1, int(nbytes))), "cudaMalloc"), int(nbytes))

    def new_stream(self) -> Any:
        return self._check(self._rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def synchronize(self, stream: Any) -> None:
        self._check(self._rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def copy_to_device(self, device: Any, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpy(int(device), host.ctypes.data, host.nbytes, kind), "cudaMemcpy")

    def copy_to_device_async(self, device: Any, host: np.ndarray, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(int(device), host.ctypes.data, host.nbytes, kind, stream),
                    "cudaMemcpyAsync")

    def copy_to_host_async(self, host: np.ndarray, device: Any, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(host.ctypes.data, int(device), host.nbytes, kind, stream),
                    "cudaMemcpyAsync")

    def device(self) -> Tuple[str, str]:
        props = self._check(self._rt.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return name.strip("\x00 "), f"{props.major}.{props.minor}"


def cuda_memory() -> Any:
    """pycuda if it imports, else cuda-python; a one-line error naming both otherwise."""
    problems = []
    for api in (PyCudaMemory, CudaPythonMemory):
        try:
            memory = api()
        except ImportError as exc:
            problems.append(f"{api.name}: {exc}")
            continue
        except ModelError:
            raise
        except Exception as exc:  # pycuda's driver errors: no GPU, driver missing or busy
            raise ModelError(f"CUDA could not start through {api.name} ({str(exc)[:160]}): check the GPU "
                             f"driver with nvidia-smi or tegrastats") from None
        logger.info("CUDA memory through %s", memory.name)
        return memory
    raise ModelError("the TensorRT backend needs pycuda or cuda-python: pip install pycuda (JetPack: "
                     "apt-get install python3-pycuda) or pip install cuda-python (" + "; ".join(problems) + ")")

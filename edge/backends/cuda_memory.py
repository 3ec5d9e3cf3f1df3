"""The few CUDA calls the TensorRT backend and the INT8 calibrator need, through pycuda
(JetPack's usual choice) or, when pycuda is missing, NVIDIA's cuda-python.

Pinned host buffers are numpy arrays; device buffers are objects whose int() is the device
pointer, which is what TensorRT takes.
"""


import ctypes
import logging
import weakref
from typing import Any, List, Tuple

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

    def close(self) -> None:
        """Nothing to do: pycuda frees each buffer and stream when it is collected."""

    def device(self) -> Tuple[str, str]:
        """(GPU name, compute capability such as '8.7')."""
        gpu = self._driver.Device(0)
        major, minor = gpu.compute_capability()
        return gpu.name(), f"{major}.{minor}"


def _free_quietly(free: Any, pointer: int) -> None:
    try:
        free(pointer)
    except Exception:  # at interpreter exit the runtime may be gone already
        pass


class _DevicePointer:
    """A cudaMalloc'd buffer, freed when released (close()) or garbage-collected, as pycuda's
    DeviceAllocation is."""

    def __init__(self, pointer: int, nbytes: int, free: Any) -> None:
        self.pointer, self.nbytes = int(pointer), nbytes
        self._finalizer = weakref.finalize(self, _free_quietly, free, self.pointer)

    def free(self) -> None:
        self._finalizer()  # runs once; later calls and the collector do nothing

    @property
    def freed(self) -> bool:
        return not self._finalizer.alive

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
        # Everything allocated here, freed by close() (or each by the collector, when its last
        # reference goes): a backend rebuilt on a long-running daemon must not leak GPU memory.
        self._device: "weakref.WeakSet[_DevicePointer]" = weakref.WeakSet()
        self._pinned: List[weakref.finalize] = []
        self._streams: List[Any] = []

    def _check(self, result: Any, call: str) -> Any:
        error = result[0] if isinstance(result, tuple) else result
        if int(error) != 0:
            raise ModelError(f"CUDA call {call} failed ({error}): check the GPU driver with nvidia-smi or tegrastats")
        return result[1] if isinstance(result, tuple) and len(result) > 1 else None

    def alloc_pinned(self, shape: Tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        pointer = self._check(self._rt.cudaMallocHost(max(1, nbytes)), "cudaMallocHost")
        raw = (ctypes.c_char * max(1, nbytes)).from_address(int(pointer))
        # The array keeps `raw` alive; once both are gone the pinned memory is freed.
        self._pinned = [finalizer for finalizer in self._pinned if finalizer.alive]
        self._pinned.append(weakref.finalize(raw, _free_quietly, self._rt.cudaFreeHost, int(pointer)))
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def alloc_device(self, nbytes: int) -> Any:
        pointer = self._check(self._rt.cudaMalloc(max(1, int(nbytes))), "cudaMalloc")
        buffer = _DevicePointer(pointer, int(nbytes), self._rt.cudaFree)
        self._device.add(buffer)
        return buffer

    def new_stream(self) -> Any:
        stream = self._check(self._rt.cudaStreamCreate(), "cudaStreamCreate")
        self._streams.append(stream)
        return stream

    def close(self) -> None:
        """Free every buffer and stream made here (the arrays from alloc_pinned must not be used
        after this). Idempotent."""
        for buffer in list(self._device):
            buffer.free()
        for finalizer in self._pinned:
            finalizer()
        for stream in self._streams:
            _free_quietly(self._rt.cudaStreamDestroy, stream)
        self._device, self._pinned, self._streams = weakref.WeakSet(), [], []

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
    # Not Ubuntu's python3-pycuda: it is built for the desktop CUDA packages, not JetPack's.
    raise ModelError("the TensorRT backend needs pycuda or cuda-python: in the venv, PATH=/usr/local/cuda/bin:$PATH "
                     "pip install 'pycuda<2022.1' on JetPack 4.6 or pip install pycuda on 5 and 6 (it compiles against "
                     "JetPack's CUDA; scripts/install.sh does this), or pip install cuda-python ("
                     + "; ".join(problems) + ")")

"""The backend interface: found by file name, real models load, wrong inputs are refused."""

from pathlib import Path

import numpy as np
import pytest

from edge.backends import available_backends, create_backend
from edge.errors import ConfigError, ModelError

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_backends_are_discovered_from_their_files():
    assert {"onnxruntime", "litert"} <= set(available_backends())
    with pytest.raises(ConfigError, match="unknown backend type 'cuda'"):
        create_backend("cuda", MODELS / "fall_yolov8s.onnx")


def test_onnxruntime_backend_runs_the_detector(models):
    backend = create_backend("onnxruntime", MODELS / "fall_yolov8s.onnx", threads=1)
    assert backend.input_shape == (1, 3, 640, 640) and backend.input_dtype == np.float32
    (output,) = backend.infer(np.zeros(backend.input_shape, np.float32))
    assert output.shape == (1, 6, 8400)
    with pytest.raises(ValueError, match="expects float32"):
        backend.infer(np.zeros((1, 3, 320, 320), np.float32))


def test_litert_backend_resizes_movenet_input():
    backend = create_backend("litert", MODELS / "movenet_multipose_lightning.tflite", threads=1,
                             input_shape=(1, 320, 320, 3))
    assert backend.input_shape == (1, 320, 320, 3) and backend.input_dtype == np.uint8
    (output,) = backend.infer(np.zeros(backend.input_shape, np.uint8))
    assert output.shape == (1, 6, 56)
    first, second = backend.infer(np.full(backend.input_shape, 60, np.uint8))[0], output
    assert not np.shares_memory(first, second)  # outputs are copies, not LiteRT's reused buffer


def test_detector_model_with_a_fixed_input_refuses_another_size():
    with pytest.raises(ModelError, match="config asks for"):
        create_backend("onnxruntime", MODELS / "fall_yolov8s.onnx", input_shape=(1, 3, 320, 320))


def test_cuda_python_frees_its_buffers_on_close_and_when_collected():
    """Where cuda-python and a GPU exist (skipped elsewhere): device and pinned buffers come back
    on close(), and a device buffer dropped by its owner comes back when collected."""
    import gc

    pytest.importorskip("cuda", reason="cuda-python does not import here (no GPU machine)")
    from edge.backends.cuda_memory import CudaPythonMemory

    try:
        memory = CudaPythonMemory()
    except (ImportError, ModelError) as exc:
        pytest.skip(f"no usable GPU through cuda-python: {exc}")

    def free_mb() -> float:
        return memory._check(memory._rt.cudaMemGetInfo(), "cudaMemGetInfo") / 2**20

    before = free_mb()
    buffers = [memory.alloc_device(64 << 20) for _ in range(4)]
    pinned = memory.alloc_pinned((16, 1024, 1024), np.float32)
    stream = memory.new_stream()
    assert stream is not None and pinned.nbytes == 64 << 20
    assert free_mb() <= before - 200  # 256 MB taken on the device
    memory.close()
    assert all(buffer.freed for buffer in buffers)
    assert free_mb() >= before - 32
    memory.close()  # idempotent
    dropped = memory.alloc_device(256 << 20)
    assert free_mb() <= before - 200
    del dropped
    gc.collect()
    assert free_mb() >= before - 32

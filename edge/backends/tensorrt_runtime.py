"""TensorRT's Python module, imported the one way every user of it does (the backend, the engine
build, the doctor): with a one-line error naming where it comes from."""


from typing import Any

from edge.errors import ModelError


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ModelError(f"TensorRT is not installed here ({exc}): build engines on the Jetson, where JetPack "
                         f"provides it (python3-libnvinfer), or pip install tensorrt on an x86 GPU machine") from None
    return trt


def trt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])

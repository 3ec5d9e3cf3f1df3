"""The small interface every inference backend implements, and the loader that picks one."""


import importlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edge.errors import ConfigError, ModelError

logger = logging.getLogger(__name__)


class InferenceBackend(ABC):
    """Runs one model: a single input tensor in, the model's raw output arrays out."""

    type_name = ""

    def __init__(self, model_path: Path, threads: int = 2, input_shape: Optional[Sequence[int]] = None) -> None:
        self.model_path = model_path
        self.threads = threads
        self.requested_input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        # Set by each backend once its model is loaded.
        self._input_shape: Tuple[int, ...] = ()
        self._input_dtype: np.dtype = np.dtype(np.float32)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        """The input tensor's shape, e.g. (1, 3, 640, 640) or (1, 256, 256, 3)."""
        return self._input_shape

    @property
    def input_dtype(self) -> np.dtype:
        """float32 or uint8."""
        return self._input_dtype

    @abstractmethod
    def infer(self, tensor: np.ndarray) -> List[np.ndarray]:
        """Run the model; returns the outputs in the model's order."""

    def _check_input(self, tensor: np.ndarray) -> None:
        if tuple(tensor.shape) != tuple(self.input_shape) or tensor.dtype != self.input_dtype:
            raise ValueError(
                f"{self.type_name} backend expects {self.input_dtype} {self.input_shape}, "
                f"got {tensor.dtype} {tuple(tensor.shape)}"
            )


def available_backends() -> List[str]:
    here = Path(__file__).parent
    return sorted(p.stem[: -len("_backend")] for p in here.glob("*_backend.py"))


def create_backend(type_name: str, model_path: Path, threads: int = 2,
                   input_shape: Optional[Sequence[int]] = None) -> InferenceBackend:
    """Import `edge/backends/<type>_backend.py` and build its backend on the model file."""
    if type_name not in available_backends():
        raise ConfigError(
            f"unknown backend type '{type_name}': use one of {', '.join(available_backends())}"
        )
    module = importlib.import_module(f"edge.backends.{type_name}_backend")
    classes = [obj for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, InferenceBackend) and obj.type_name == type_name]
    if len(classes) != 1:
        raise RuntimeError(f"edge/backends/{type_name}_backend.py must define one backend with type_name '{type_name}'")
    backend = classes[0](model_path, threads=threads, input_shape=input_shape)
    logger.info("%s backend loaded %s, input %s %s", type_name, model_path, backend.input_dtype, backend.input_shape)
    return backend


def model_load_error(model_path: Path, exc: Exception) -> ModelError:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return ModelError(
        f"model file {model_path} cannot be loaded ({first_line}): it may be corrupt or truncated; "
        f"delete it and run `fall-edge fetch-models`"
    )

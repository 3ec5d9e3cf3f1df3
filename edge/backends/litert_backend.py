"""CPU backend on LiteRT (ai-edge-litert, TensorFlow Lite's runtime): runs MoveNet. On Python 3.8,
which ai-edge-litert has no wheel for, the same interpreter comes from tflite-runtime."""


from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from edge.backends.base import InferenceBackend, model_load_error


class LiteRTBackend(InferenceBackend):
    type_name = "litert"

    def __init__(self, model_path: Path, threads: int = 2, input_shape: Optional[Sequence[int]] = None) -> None:
        super().__init__(model_path, threads, input_shape)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            from tflite_runtime.interpreter import Interpreter  # Python 3.8: setup.py's cpu extra

        try:
            self._interpreter = Interpreter(model_path=str(model_path), num_threads=max(1, threads))
            detail = self._interpreter.get_input_details()[0]
            if self.requested_input_shape is not None:
                # MoveNet MultiPose takes any H, W (multiples of 32); fix it once here.
                self._interpreter.resize_tensor_input(detail["index"], list(self.requested_input_shape))
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise model_load_error(model_path, exc) from None
        detail = self._interpreter.get_input_details()[0]
        self._input_index = detail["index"]
        self._input_shape = tuple(int(d) for d in detail["shape"])
        self._input_dtype = np.dtype(detail["dtype"])
        self._output_indices = [d["index"] for d in self._interpreter.get_output_details()]

    def infer(self, tensor: np.ndarray) -> List[np.ndarray]:
        self._check_input(tensor)
        self._interpreter.set_tensor(self._input_index, tensor)
        self._interpreter.invoke()
        # Copy: LiteRT reuses its output buffers on the next invoke.
        return [self._interpreter.get_tensor(index).copy() for index in self._output_indices]

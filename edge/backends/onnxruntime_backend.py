"""CPU backend on ONNX Runtime (the embedded default for the detector)."""


from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from edge.backends.base import InferenceBackend, model_load_error

_DTYPES = {"tensor(float)": np.dtype(np.float32), "tensor(uint8)": np.dtype(np.uint8)}


class OnnxRuntimeBackend(InferenceBackend):
    type_name = "onnxruntime"

    def __init__(self, model_path: Path, threads: int = 2, input_shape: Optional[Sequence[int]] = None) -> None:
        super().__init__(model_path, threads, input_shape)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # ORT warnings go to its own stderr logger, not ours
        try:
            self._session = ort.InferenceSession(str(model_path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise model_load_error(model_path, exc) from None
        model_input = self._session.get_inputs()[0]
        self._input_name = model_input.name
        if model_input.type not in _DTYPES:
            raise model_load_error(model_path, ValueError(f"unsupported input type {model_input.type}"))
        self._input_dtype = _DTYPES[model_input.type]
        dims = [d if isinstance(d, int) else -1 for d in model_input.shape]
        if self.requested_input_shape is not None:
            for have, want in zip(dims, self.requested_input_shape):
                if have not in (-1, want):
                    wanted = list(self.requested_input_shape)
                    raise model_load_error(model_path, ValueError(f"model input is {dims}, config asks for {wanted}"))
            dims = list(self.requested_input_shape)
        if any(d < 1 for d in dims):
            raise model_load_error(model_path, ValueError(f"model input {dims} has dynamic sizes; set input_size"))
        self._input_shape = tuple(dims)

    def infer(self, tensor: np.ndarray) -> List[np.ndarray]:
        self._check_input(tensor)
        return list(self._session.run(None, {self._input_name: tensor}))

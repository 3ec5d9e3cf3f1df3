"""The learned sequence cue as the pipeline sees it: windows of tracks' skeletons in, one score per
track out ("a fall happened in this window", 0..1), every track of a frame in one model call."""


import json
import logging
from pathlib import Path
from typing import List

import numpy as np

from edge.backends import InferenceBackend, create_backend
from edge.config import SequenceConfig
from edge.errors import ModelError
from edge.fall.sequence import FEATURES, WINDOW_FRAMES
from edge.modelstore import verify_model_file
from edge.modelstore.fetch import sha256_of

logger = logging.getLogger(__name__)


def verify_against_manifest(model_path: Path) -> None:
    """A model trained here is committed with `<name>.json` (its training manifest) holding its
    sha256: a changed or damaged file is refused with the way back."""
    manifest = model_path.with_suffix(".json")
    if model_path.suffix != ".onnx" or not manifest.is_file():
        return
    try:
        expected = json.loads(manifest.read_text(encoding="utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ModelError(f"{manifest} is not a training manifest with a sha256: restore it from the "
                         f"repository (git checkout {manifest.name})") from None
    if sha256_of(model_path) != expected:
        raise ModelError(f"model file {model_path} does not match the sha256 in {manifest.name}: restore both from "
                         f"the repository, or retrain with scripts/train_sequence.py")


class SequenceScorer:
    def __init__(self, backend: InferenceBackend) -> None:
        shape = backend.input_shape
        if len(shape) != 3 or tuple(shape[1:]) != (WINDOW_FRAMES, FEATURES):
            raise ModelError(f"sequence model {backend.model_path} has input {list(shape)}; expected "
                             f"[batch, {WINDOW_FRAMES}, {FEATURES}] (edge/fall/sequence.py)")
        self.backend = backend
        self.batch = int(shape[0])

    @classmethod
    def from_config(cls, config: SequenceConfig, model_path: Path) -> "SequenceScorer":
        verify_model_file(model_path)
        verify_against_manifest(model_path)
        return cls(create_backend(config.type, model_path, threads=config.threads))

    def score(self, windows: List[np.ndarray]) -> List[float]:
        """One score per window, in order; the model's fixed batch is filled with zeros."""
        scores: List[float] = []
        for start in range(0, len(windows), self.batch):
            chunk = windows[start:start + self.batch]
            tensor = np.zeros((self.batch, WINDOW_FRAMES, FEATURES), np.float32)
            tensor[:len(chunk)] = np.stack(chunk)
            output = self.backend.infer(tensor)[0].reshape(self.batch, -1)
            scores += [float(v) for v in output[:len(chunk), 0]]
        return scores

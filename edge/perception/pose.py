"""The pose model: whole frames or crops around people -> 18-point skeletons in frame pixels."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List

import cv2
import numpy as np

from edge.backends import InferenceBackend, create_backend
from edge.config import PoseConfig
from edge.decoding.letterbox import Letterbox, crop_letterbox, letterbox
from edge.decoding.movenet import MOVENET_ROW, decode_movenet
from edge.errors import ConfigError, ModelError
from edge.modelstore import verify_model_file
from edge.types import Box, Person

logger = logging.getLogger(__name__)


class PoseEstimator:
    def __init__(self, config: PoseConfig, backend: InferenceBackend) -> None:
        self.config = config
        self.backend = backend
        shape = backend.input_shape
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise ModelError(f"pose model {backend.model_path} has input {list(shape)}; expected [1,S,S,3]")
        self.input_size = int(shape[1])
        probe = backend.infer(np.zeros(shape, dtype=backend.input_dtype))[0]
        if probe.size % MOVENET_ROW != 0:
            raise ModelError(f"pose model {backend.model_path} gives output {list(probe.shape)}; "
                             f"expected MoveNet MultiPose [1,6,{MOVENET_ROW}]")

    @classmethod
    def from_config(cls, config: PoseConfig, model_path: Path) -> PoseEstimator:
        if config.input_size % 32 != 0 or config.input_size < 64:
            raise ConfigError(f"pose.input_size must be a multiple of 32 and at least 64, got {config.input_size}")
        verify_model_file(model_path)
        backend = create_backend(config.type, model_path, threads=config.threads,
                                 input_shape=(1, config.input_size, config.input_size, 3))
        return cls(config, backend)

    def _run(self, canvas: np.ndarray, transform: Letterbox) -> List[Person]:
        tensor = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)[None].astype(self.backend.input_dtype, copy=False)
        output = self.backend.infer(tensor)[0]
        return decode_movenet(output, self.input_size, transform,
                              self.config.min_person_score, self.config.min_keypoint_score)

    def estimate(self, image: np.ndarray) -> List[Person]:
        """People in the whole frame."""
        return self._run(*letterbox(image, self.input_size))

    def estimate_in(self, image: np.ndarray, region: Box) -> List[Person]:
        """People inside `region` of the frame (a crop scaled up to the model's input)."""
        return self._run(*crop_letterbox(image, region, self.input_size))

"""The pose model: whole frames or crops around people -> 18-point skeletons in frame pixels."""


import logging
from pathlib import Path
from typing import List, Optional

import numpy as np

from edge.backends import InferenceBackend, create_backend
from edge.config import PoseConfig
from edge.config.rules import valid_input_size
from edge.decoding.letterbox import Letterbox, crop_letterbox, letterbox
from edge.decoding.movenet import MOVENET_ROW, decode_movenet
from edge.decoding.preprocess import movenet_input, trt_pose_input
from edge.decoding.trt_pose import PAF_CHANNELS, ParseSettings, decode_trt_pose
from edge.errors import ConfigError, ModelError
from edge.modelstore import verify_model_file
from edge.modelstore.fetch import sha256_of
from edge.perception.output_cache import OutputCache, pack_people, unpack_people
from edge.types import NUM_KEYPOINTS, Box, Person

logger = logging.getLogger(__name__)


class PoseEstimator:
    """MoveNet MultiPose (input [1,S,S,3], one output) or trt_pose (input [1,3,S,S], outputs
    cmap and paf), told apart by the model's input layout."""

    def __init__(self, config: PoseConfig, backend: InferenceBackend) -> None:
        self.config = config
        self.backend = backend
        shape = backend.input_shape
        if len(shape) == 4 and shape[3] == 3 and shape[1] == shape[2]:
            self.format = "movenet"
            self.input_size = int(shape[1])
        elif len(shape) == 4 and shape[1] == 3 and shape[2] == shape[3]:
            self.format = "trt_pose"
            self.input_size = int(shape[2])
        else:
            raise ModelError(f"pose model {backend.model_path} has input {list(shape)}; expected MoveNet "
                             f"[1,S,S,3] or trt_pose [1,3,S,S]")
        self.output_cache: Optional[OutputCache] = None  # eval only: see output_cache.py
        self.parse_settings = ParseSettings(cmap_threshold=config.cmap_threshold,
                                            link_threshold=config.link_threshold)
        outputs = backend.infer(np.zeros(shape, dtype=backend.input_dtype))
        if self.format == "movenet" and outputs[0].size % MOVENET_ROW != 0:
            raise ModelError(f"pose model {backend.model_path} gives output {list(outputs[0].shape)}; "
                             f"expected MoveNet MultiPose [1,6,{MOVENET_ROW}]")
        if self.format == "trt_pose":
            shapes = sorted(tuple(o.shape[-3:]) for o in outputs)
            if len(outputs) != 2 or [s[0] for s in shapes] != [NUM_KEYPOINTS, PAF_CHANNELS]:
                raise ModelError(f"pose model {backend.model_path} gives outputs {[list(o.shape) for o in outputs]}; "
                                 f"expected trt_pose cmap [1,{NUM_KEYPOINTS},H,W] and paf [1,{PAF_CHANNELS},H,W]")

    @classmethod
    def from_config(cls, config: PoseConfig, model_path: Path) -> "PoseEstimator":
        if not valid_input_size(config.input_size):
            raise ConfigError(f"pose.input_size must be a multiple of 32 and at least 64, got {config.input_size}")
        verify_model_file(model_path)
        # LiteRT's MoveNet takes several sizes: pose.input_size picks one. ONNX and TensorRT
        # trt_pose models have one fixed size, which is used as it is.
        hint = (1, config.input_size, config.input_size, 3) if config.type == "litert" else None
        backend = create_backend(config.type, model_path, threads=config.threads, input_shape=hint)
        return cls(config, backend)

    def _run(self, canvas: np.ndarray, transform: Letterbox) -> List[Person]:
        if self.format == "trt_pose":
            outputs = self.backend.infer(trt_pose_input(canvas).astype(self.backend.input_dtype, copy=False))
            cmap, paf = sorted(outputs, key=lambda o: o.shape[-3])  # 18 channels, then 42
            return decode_trt_pose(cmap, paf, self.input_size, transform, self.parse_settings,
                                   self.config.min_keypoint_score)
        output = self.backend.infer(movenet_input(canvas).astype(self.backend.input_dtype, copy=False))[0]
        return decode_movenet(output, self.input_size, transform,
                              self.config.min_person_score, self.config.min_keypoint_score)

    def cache_identity(self) -> str:
        """The model file and every setting that changes what estimate() returns."""
        c = self.config
        return (f"pose|{sha256_of(self.backend.model_path)}|{c.type}|{self.backend.input_dtype}|{self.format}|"
                f"{self.input_size}|{c.min_person_score}|"
                f"{c.min_keypoint_score}|{c.cmap_threshold}|{c.link_threshold}")

    def estimate(self, image: np.ndarray) -> List[Person]:
        """People in the whole frame."""
        return self._cached(image, None)

    def estimate_in(self, image: np.ndarray, region: Box) -> List[Person]:
        """People inside `region` of the frame (a crop scaled up to the model's input)."""
        return self._cached(image, region)

    def _cached(self, image: np.ndarray, region: Optional[Box]) -> List[Person]:
        cache = self.output_cache
        key = cache.key(image, "pose", region) if cache is not None else b""
        stored = cache.get(key) if cache is not None else None
        if stored is not None:
            return unpack_people(stored)
        inputs = letterbox(image, self.input_size) if region is None else crop_letterbox(image, region,
                                                                                         self.input_size)
        people = self._run(*inputs)
        if cache is not None:
            cache.put(key, pack_people(people))
        return people

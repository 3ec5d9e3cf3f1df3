"""The YOLO detector: letterbox -> backend -> decode -> detections in frame pixels."""


import logging
from pathlib import Path
from typing import List, Optional

import numpy as np

from edge.backends import InferenceBackend, create_backend
from edge.config import DetectorConfig
from edge.decoding.letterbox import letterbox
from edge.decoding.preprocess import yolo_input
from edge.decoding.yolo import decode_yolo, detect_layout
from edge.errors import ConfigError, ModelError
from edge.modelstore import verify_model_file
from edge.modelstore.fetch import sha256_of
from edge.perception.output_cache import OutputCache, pack_detections, unpack_detections
from edge.types import Detection

logger = logging.getLogger(__name__)


class Detector:
    def __init__(self, config: DetectorConfig, backend: InferenceBackend) -> None:
        if config.fall_class not in config.class_names:
            raise ConfigError(f"detector.fall_class '{config.fall_class}' is not in detector.class_names "
                              f"{config.class_names}: make them agree")
        self.config = config
        self.backend = backend
        shape = backend.input_shape
        if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
            raise ModelError(f"detector model {backend.model_path} has input {list(shape)}; "
                             f"expected a square NCHW image [1,3,S,S]")
        self.input_size = int(shape[2])
        self.fall_class_id = config.class_names.index(config.fall_class)
        self.output_cache: Optional[OutputCache] = None  # eval only: see output_cache.py
        # Check the layout once on a blank image, so a wrong class list fails at start, not mid-stream.
        probe = backend.infer(np.zeros(shape, dtype=backend.input_dtype))[0]
        try:
            self.layout = config.layout if config.layout != "auto" else detect_layout(probe, len(config.class_names))
        except ValueError as exc:
            raise ModelError(f"detector model {backend.model_path}: {exc}") from None

    @classmethod
    def from_config(cls, config: DetectorConfig, model_path: Path) -> "Detector":
        verify_model_file(model_path)
        backend = create_backend(config.type, model_path, threads=config.threads,
                                 input_shape=(1, 3, config.input_size, config.input_size))
        return cls(config, backend)

    def preprocess(self, image: np.ndarray):
        canvas, transform = letterbox(image, self.input_size)
        return yolo_input(canvas).astype(self.backend.input_dtype, copy=False), transform

    def cache_identity(self) -> str:
        """The model file and every setting that changes what detect() returns."""
        c = self.config
        return (f"detector|{sha256_of(self.backend.model_path)}|{c.type}|{self.backend.input_dtype}|"
                f"{self.input_size}|{self.layout}|"
                f"{','.join(c.class_names)}|{c.score_threshold}|{c.iou_threshold}")

    def detect(self, image: np.ndarray) -> List[Detection]:
        cache = self.output_cache
        key = cache.key(image, "detect") if cache is not None else b""
        stored = cache.get(key) if cache is not None else None
        if stored is not None:
            return unpack_detections(stored, self.config.class_names)
        tensor, transform = self.preprocess(image)
        output = self.backend.infer(tensor)[0]
        height, width = image.shape[:2]
        detections = decode_yolo(output, self.config.class_names, transform, self.layout,
                                 self.config.score_threshold, self.config.iou_threshold, width, height)
        if cache is not None:
            cache.put(key, pack_detections(detections, len(self.config.class_names)))
        return detections

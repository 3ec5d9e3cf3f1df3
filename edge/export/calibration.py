"""INT8 calibration data: batches from a folder of images, preprocessed exactly as at
inference (edge.decoding.preprocess), a cache file that makes rebuilds skip calibration, and
TensorRT's calibrator (entropy or MinMax) on top of them.

The cache is tied to what it was computed from (the ONNX file, the preprocessing, the
calibrator): a key in `<cache>.json` beside it, and a cache whose key differs is not used.
The batching and the cache are plain Python and tested everywhere; only the small
calibrator subclass needs TensorRT and a GPU.
"""


import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.capture.opencv_source import OpenCvSource
from edge.decoding.preprocess import model_input
from edge.errors import FallEdgeError
from edge.private import open_private, private_folder

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class CalibrationBatches:
    """Full batches of preprocessed images, in file-name order. A final partial batch is
    dropped (TensorRT's explicit-batch networks need the network's own batch size).
    holdout_every=k keeps every k-th image out of calibration (`held_back`): the frames the
    INT8 engine is then checked on (edge/export/agreement.py)."""

    def __init__(self, image_dir: Path, kind: str, input_shape: Tuple[int, ...], limit: int = 0,
                 holdout_every: int = 0) -> None:
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FallEdgeError(f"calibration folder {image_dir} not found: make one with "
                                f"`fall-edge calib-frames VIDEO... --out {image_dir}`")
        files = image_files(self.image_dir)
        if limit:
            files = files[:limit]
        self.held_back: List[Path] = []
        if holdout_every > 1 and len(files) >= holdout_every:
            self.held_back = files[holdout_every - 1::holdout_every]
            files = [path for index, path in enumerate(files) if index % holdout_every != holdout_every - 1]
        self.kind = kind
        self.input_shape = tuple(int(d) for d in input_shape)
        self.batch_size = self.input_shape[0]
        self.size = self.input_shape[-1]
        if len(files) < self.batch_size:
            raise FallEdgeError(f"calibration folder {image_dir} has {len(files)} images; at least "
                                f"{self.batch_size} needed (about 500 varied site frames is usual)")
        self.files = files[: len(files) - len(files) % self.batch_size]
        self._next = 0
        self.images_given = 0  # to the calibrator, this build (0 when a cache was used instead)

    def __len__(self) -> int:
        return len(self.files) // self.batch_size

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.input_shape)) * 4

    def reset(self) -> None:
        self._next = 0

    def next_batch(self) -> Optional[np.ndarray]:
        """The next [B, C, H, W] float32 contiguous batch, or None when all were given."""
        if self._next >= len(self):
            return None
        start = self._next * self.batch_size
        tensors = [self._load(path) for path in self.files[start:start + self.batch_size]]
        self._next += 1
        self.images_given += len(tensors)
        if self._next == len(self) or self._next % 10 == 0:
            logger.info(f"calibration batch {self._next}/{len(self)}")
        return np.ascontiguousarray(np.concatenate(tensors, axis=0), dtype=np.float32)

    def __iter__(self) -> Iterator[np.ndarray]:
        self.reset()
        while True:
            batch = self.next_batch()
            if batch is None:
                return
            yield batch

    def _load(self, path: Path) -> np.ndarray:
        return model_input(self.kind, read_image(path), self.size)

    def held_back_images(self) -> Iterator[np.ndarray]:
        for path in self.held_back:
            yield read_image(path)


def image_files(folder: Path) -> List[Path]:
    """The images in a folder (calibration frames), in file-name order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FallEdgeError(f"calibration image {path} cannot be read: delete it or replace it")
    return image


CALIBRATORS = ("minmax", "entropy")


def default_calibrator(kind: str) -> str:
    """MinMax for detectors: the YOLO head's output spans pixels and 0..1 scores, entropy
    calibration clips the large values (Ultralytics' TensorRT INT8 export uses MinMax after
    measuring both, and so does the CPU's INT8 in edge/export/quantize.py); entropy for trt_pose's
    maps, as torch2trt does."""
    return "minmax" if kind == "yolo" else "entropy"


def preprocessing_digest(kind: str, size: int) -> str:
    """What the preprocessing does, as a hash of its output on a fixed synthetic frame: a change
    to edge.decoding.preprocess (scaling, channel order, letterbox) changes it."""
    ramp = np.arange(480 * 640 * 3, dtype=np.uint32).reshape(480, 640, 3)
    frame = ((ramp * 2654435761) >> 24).astype(np.uint8)  # fixed, varied, no randomness
    tensor = np.ascontiguousarray(model_input(kind, frame, size), dtype=np.float32)
    return hashlib.sha256(tensor.tobytes()).hexdigest()


def calibration_key(onnx_sha256: str, kind: str, input_shape: Sequence[int], calibrator: str) -> Dict[str, Any]:
    return {"onnx_sha256": onnx_sha256, "kind": kind, "input_shape": [int(d) for d in input_shape],
            "preprocessing_sha256": preprocessing_digest(kind, int(input_shape[-1])), "calibrator": calibrator}


class CalibrationCache:
    """TensorRT's calibration table in a file, read back on rebuilds so calibration is skipped,
    but only for the ONNX, preprocessing and calibrator it was computed from (`key`), and never
    when the build was given calibration images (`recalibrate`)."""

    def __init__(self, path: Path, key: Optional[Dict[str, Any]] = None, recalibrate: bool = False) -> None:
        self.path = Path(path)
        self.meta_path = Path(str(self.path) + ".json")
        self.key = key
        self.recalibrate = recalibrate
        self.used = False

    def exists(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size > 0

    def meta(self) -> Dict[str, Any]:
        try:
            return dict(json.loads(self.meta_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return {}

    def mismatch(self) -> Optional[str]:
        """Why the cache on disk cannot be used for this build, or None if it can."""
        if not self.exists():
            return "there is none"
        if self.key is None:
            return None
        stored = self.meta().get("key")
        if not isinstance(stored, dict):
            return f"it has no {self.meta_path.name} saying what it was computed from"
        changed = [name for name in self.key if stored.get(name) != self.key[name]]
        return f"it was computed for another {', '.join(changed)}" if changed else None

    def usable(self) -> bool:
        return not self.recalibrate and self.mismatch() is None

    def read(self) -> Optional[bytes]:
        if self.recalibrate:
            return None  # calibration images were given: calibrate on them
        why = self.mismatch()
        if why is not None:
            if self.exists():
                logger.warning("not using the calibration cache %s: %s; calibrating again", self.path, why)
            return None
        logger.info("reusing the calibration cache %s", self.path)
        self.used = True
        return self.path.read_bytes()

    def write(self, data: bytes, images: int = 0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for path, content in ((self.path, bytes(data)),
                              (self.meta_path, (json.dumps({"key": self.key, "images": images}, indent=2) + "")
                               .encode())):
            temporary = path.with_suffix(path.suffix + ".tmp")
            temporary.write_bytes(content)
            temporary.replace(path)  # never a half-written cache
        logger.info("wrote the calibration cache %s (%d bytes, %d images)", self.path, len(data), images)


def make_calibrator(trt: Any, cuda: Any, batches: Optional[CalibrationBatches], cache: CalibrationCache,
                    batch_size: int, algorithm: str) -> Any:
    """A trt.IInt8MinMaxCalibrator or IInt8EntropyCalibrator2 fed from `batches` through one
    device buffer; with no batches it only hands TensorRT the cached table (a rebuild needs no
    images). `cuda` is edge.backends.cuda_memory's API (pycuda or cuda-python)."""
    if algorithm not in CALIBRATORS:
        raise FallEdgeError(f"calibrator '{algorithm}' is not one of {', '.join(CALIBRATORS)}")
    base = trt.IInt8MinMaxCalibrator if algorithm == "minmax" else trt.IInt8EntropyCalibrator2

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.device_input = cuda.alloc_device(batches.nbytes) if batches is not None else None
            if batches is not None:
                batches.reset()

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names: Sequence[str]) -> Optional[List[int]]:
            batch = batches.next_batch() if batches is not None else None
            if batch is None:
                return None  # tells TensorRT calibration is over
            cuda.copy_to_device(self.device_input, batch)
            return [int(self.device_input)]

        def read_calibration_cache(self) -> Optional[bytes]:
            return cache.read()

        def write_calibration_cache(self, data: Any) -> None:
            cache.write(bytes(data), images=batches.images_given if batches is not None else 0)

    return Calibrator()


def extract_frames(videos: Sequence[Path], out_dir: Path, every_s: float, limit: int) -> int:
    """Save one frame every `every_s` seconds of each video as JPEG; returns how many. The frames
    show people, so the folder and each file are owner-only (edge/private.py)."""
    private_folder(out_dir)
    saved = 0
    for video in videos:
        if saved >= limit:
            break
        with OpenCvSource(str(video)) as source:
            step = max(1, round(every_s * source.fps))
            for frame in source.frames():
                if frame.index % step:
                    continue
                encoded, data = cv2.imencode(".jpg", frame.image)
                if not encoded:
                    raise FallEdgeError(f"frame {frame.index} of {video} cannot be encoded as JPEG")
                with open_private(out_dir / f"{Path(video).stem}_{frame.index:06d}.jpg", "wb") as handle:
                    handle.write(data.tobytes())
                saved += 1
                if saved >= limit:
                    break
        logger.info(f"{video}: {saved} frames so far")
    return saved

"""INT8 calibration data: batches from a folder of images, preprocessed exactly as at
inference (edge.decoding.preprocess), a cache file that makes rebuilds skip calibration, and
TensorRT's entropy calibrator on top of them.

The batching and the cache are plain Python and tested everywhere; only the small
IInt8EntropyCalibrator2 subclass needs TensorRT and a GPU.
"""


import logging
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.decoding.preprocess import model_input
from edge.errors import FallEdgeError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


class CalibrationBatches:
    """Full batches of preprocessed images, in file-name order. A final partial batch is
    dropped (TensorRT's explicit-batch networks need the network's own batch size)."""

    def __init__(self, image_dir: Path, kind: str, input_shape: Tuple[int, ...], limit: int = 0) -> None:
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FallEdgeError(f"calibration folder {image_dir} not found: make one with "
                                f"`fall-edge calib-frames VIDEO... --out {image_dir}`")
        files = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if limit:
            files = files[:limit]
        self.kind = kind
        self.input_shape = tuple(int(d) for d in input_shape)
        self.batch_size = self.input_shape[0]
        self.size = self.input_shape[-1]
        if len(files) < self.batch_size:
            raise FallEdgeError(f"calibration folder {image_dir} has {len(files)} images; at least "
                                f"{self.batch_size} needed (about 500 varied site frames is usual)")
        self.files = files[: len(files) - len(files) % self.batch_size]
        self._next = 0

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
        if self._next == len(self) or self._next % 10 == 0:
            sys.stderr.write(f"  calibration batch {self._next}/{len(self)}\n")
        return np.ascontiguousarray(np.concatenate(tensors, axis=0), dtype=np.float32)

    def __iter__(self) -> Iterator[np.ndarray]:
        self.reset()
        while True:
            batch = self.next_batch()
            if batch is None:
                return
            yield batch

    def _load(self, path: Path) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FallEdgeError(f"calibration image {path} cannot be read: delete it or replace it")
        return model_input(self.kind, image, self.size)


class CalibrationCache:
    """TensorRT's calibration table in a file: read back on rebuilds so calibration is skipped."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size > 0

    def read(self) -> Optional[bytes]:
        if self.exists():
            logger.info("reusing the calibration cache %s", self.path)
            return self.path.read_bytes()
        return None

    def write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        temporary.write_bytes(bytes(data))
        temporary.replace(self.path)  # never a half-written cache
        logger.info("wrote the calibration cache %s (%d bytes)", self.path, len(data))


def make_entropy_calibrator(trt: Any, cuda: Any, batches: Optional[CalibrationBatches], cache: CalibrationCache,
                            batch_size: int) -> Any:
    """A trt.IInt8EntropyCalibrator2 fed from `batches` through one device buffer; with no
    batches it only hands TensorRT the cached table (a rebuild needs no images).
    `cuda` is edge.backends.cuda_memory's API (pycuda or cuda-python)."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
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
            cache.write(bytes(data))

    return EntropyCalibrator()


def extract_frames(videos: Sequence[Path], out_dir: Path, every_s: float, limit: int) -> int:
    """Save one frame every `every_s` seconds of each video as JPEG; returns how many."""
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = 0
    for video in videos:
        capture = cv2.VideoCapture(str(video))
        if not capture.isOpened():
            raise FallEdgeError(f"video {video} cannot be opened: check the path and format")
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        step = max(1, round(every_s * fps))
        index = 0
        while saved < limit:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == 0:
                cv2.imwrite(str(out_dir / f"{Path(video).stem}_{index:06d}.jpg"), frame)
                saved += 1
            index += 1
        capture.release()
        sys.stderr.write(f"  {video}: {saved} frames so far\n")
    return saved

"""Letterboxing (resize keeping aspect ratio, pad) and the inverse mapping back to frame pixels."""


from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from edge.types import Box

PAD_VALUE = 114  # the grey YOLO was trained with; harmless for MoveNet


@dataclass(frozen=True)
class Letterbox:
    """Maps model-input pixels back to frame pixels: frame = (input - pad) / scale + offset."""

    scale: float
    pad_x: float
    pad_y: float
    offset_x: float = 0.0  # where a crop started in the frame
    offset_y: float = 0.0

    def to_frame_xy(self, xy: np.ndarray) -> np.ndarray:
        out = np.empty_like(xy, dtype=np.float32)
        out[..., 0] = (xy[..., 0] - self.pad_x) / self.scale + self.offset_x
        out[..., 1] = (xy[..., 1] - self.pad_y) / self.scale + self.offset_y
        return out


def ensure_bgr(image: np.ndarray) -> np.ndarray:
    """Accept grayscale, BGRA or BGR uint8 images; return a contiguous 3-channel BGR uint8 image."""
    if image is None or not isinstance(image, np.ndarray) or image.size == 0:
        raise ValueError("empty frame")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image.reshape(image.shape[0], image.shape[1]), cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    raise ValueError(f"unsupported frame shape {image.shape}")


def letterbox(image: np.ndarray, size: int) -> Tuple[np.ndarray, Letterbox]:
    """Resize the longer side to `size`, centre it on a grey square of size x size."""
    height, width = image.shape[:2]
    scale = min(size / height, size / width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    return canvas, Letterbox(scale=scale, pad_x=pad_x, pad_y=pad_y)


def square_crop_box(box: Box, margin: float, frame_w: int, frame_h: int) -> Box:
    """A square around `box` grown by `margin` per side, clipped to the frame where possible."""
    cx, cy = box.center
    side = max(box.width, box.height) * (1.0 + 2.0 * margin)
    side = min(side, float(max(frame_w, frame_h)))
    x1 = min(max(0.0, cx - side / 2), max(0.0, frame_w - side))
    y1 = min(max(0.0, cy - side / 2), max(0.0, frame_h - side))
    return Box(x1, y1, x1 + side, y1 + side)


def crop_letterbox(image: np.ndarray, region: Box, size: int) -> Tuple[np.ndarray, Letterbox]:
    """Cut `region` out of the frame (grey where it leaves the frame) and letterbox it to size."""
    height, width = image.shape[:2]
    x1, y1 = int(np.floor(region.x1)), int(np.floor(region.y1))
    x2, y2 = int(np.ceil(region.x2)), int(np.ceil(region.y2))
    crop = np.full((max(1, y2 - y1), max(1, x2 - x1), 3), PAD_VALUE, dtype=np.uint8)
    sx1, sy1, sx2, sy2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
    if sx2 > sx1 and sy2 > sy1:
        crop[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
    canvas, transform = letterbox(crop, size)
    return canvas, Letterbox(transform.scale, transform.pad_x, transform.pad_y, float(x1), float(y1))

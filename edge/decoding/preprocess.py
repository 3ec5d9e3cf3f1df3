"""Model input tensors from a letterboxed BGR canvas. Inference and INT8 calibration both use
these, so a calibrated engine sees exactly the inputs it was calibrated on."""


from typing import Callable, Dict

import cv2
import numpy as np

from edge.decoding.letterbox import letterbox

# trt_pose was trained on ImageNet-normalised RGB.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def yolo_input(canvas: np.ndarray) -> np.ndarray:
    """[1, 3, S, S] float32 RGB in 0..1."""
    tensor = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None]
    return np.ascontiguousarray(tensor, dtype=np.float32) / np.float32(255.0)


def trt_pose_input(canvas: np.ndarray) -> np.ndarray:
    """[1, 3, S, S] float32 RGB, ImageNet mean and std."""
    rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(((rgb - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None])


def movenet_input(canvas: np.ndarray) -> np.ndarray:
    """[1, S, S, 3] uint8 RGB (the backend casts to the model's integer type)."""
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB)[None]


PREPROCESSORS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "yolo": yolo_input, "trt_pose": trt_pose_input, "movenet": movenet_input}


def model_input(kind: str, image: np.ndarray, size: int) -> np.ndarray:
    """The whole image letterboxed to size and turned into `kind`'s input tensor."""
    canvas, _ = letterbox(image, size)
    return PREPROCESSORS[kind](canvas)

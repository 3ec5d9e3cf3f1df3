"""The config file's schema: one dataclass per section, every field with a justified default.

The README's "Config reference" explains each threshold; keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List


@dataclass
class DetectorConfig:
    """The object detector (YOLO) that confirms falls and finds people the pose model misses."""

    type: str = "onnxruntime"  # backend: onnxruntime (CPU) | tensorrt (Jetson, see issue 5)
    model: str = "models/fall_yolov8s.onnx"
    layout: str = "auto"  # yolov8 ([1,4+nc,N]) | yolov5 ([1,N,5+nc]) | auto
    input_size: int = 640
    class_names: List[str] = field(default_factory=lambda: ["Normal", "Fall"])
    fall_class: str = "Fall"
    score_threshold: float = 0.3
    iou_threshold: float = 0.45
    threads: int = 2
    # Scheduling: the detector costs ~10x the pose model on a CPU, so it runs every N
    # processed frames and at once when a track starts to look like a fall.
    every_n_frames: int = 8
    on_fall_candidate: bool = True
    enabled: bool = True


@dataclass
class PoseConfig:
    """The pose model that runs on every processed frame."""

    type: str = "litert"  # backend: litert (CPU, MoveNet) | tensorrt (trt_pose, issue 5)
    model: str = "models/movenet_multipose_lightning.tflite"
    input_size: int = 256
    min_person_score: float = 0.2
    min_keypoint_score: float = 0.2
    threads: int = 2
    # Top-down refinement: people smaller than this fraction of the frame height get a
    # second pose pass on a crop around them, because MoveNet at 256 px loses small people.
    crop_below_height_fraction: float = 0.45
    crop_margin: float = 0.35  # box grown by this fraction on each side before cropping
    max_crops_per_frame: int = 3


@dataclass
class TrackerConfig:
    iou_threshold: float = 0.2  # below this overlap an observation starts a new track
    max_age_s: float = 1.5  # a track not seen for this long is dropped
    down_max_age_s: float = 20.0  # ... unless it was last seen lying down
    min_hits: int = 2  # observations before a track is reported


@dataclass
class FallConfig:
    """Thresholds of the per-track state machine (see README, "Why these defaults")."""

    # Lying posture score = weighted mean of three cues, each mapped to 0..1.
    torso_angle_low_deg: float = 40.0  # torso this close to vertical scores 0
    torso_angle_high_deg: float = 70.0  # ... this close to horizontal scores 1
    aspect_low: float = 0.9  # bbox width/height scoring 0
    aspect_high: float = 1.5  # ... and 1
    weight_torso_angle: float = 0.4
    weight_aspect: float = 0.3
    weight_detector: float = 0.3
    lying_enter: float = 0.55  # hysteresis: enter "down" above this ...
    lying_exit: float = 0.35  # ... and leave it below this
    upright_below: float = 0.35  # posture score that counts as an upright baseline
    min_upright_s: float = 0.4  # upright for this long before a fall can count
    fall_window_s: float = 3.0  # upright -> down must happen within this window
    min_descent: float = 0.35  # hip drop, in upright torso lengths
    confirm_s: float = 0.4  # lying this long confirms the fall (fall_detected)
    alarm_hold_s: float = 3.0  # still down this long after the fall: alarm
    recover_s: float = 1.5  # upright this long after a fall: recovered
    require_upright_baseline: bool = True  # False: someone found lying also alarms
    detector_max_age_s: float = 1.5  # a detector score older than this is ignored


@dataclass
class OutputConfig:
    camera: str = "cam0"
    process_fps: float = 10.0  # frames per second the pipeline processes; 0 = every frame


@dataclass
class Config:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    fall: FallConfig = field(default_factory=FallConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

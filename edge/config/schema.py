"""The config file's schema: one dataclass per section, every field with a justified default.

The README's "Config reference" explains each threshold; keep the two in step.
"""


from dataclasses import dataclass, field
from typing import List


@dataclass
class DetectorConfig:
    """The object detector (YOLO) that confirms falls and finds people the pose model misses."""

    type: str = "onnxruntime"  # backend: onnxruntime (CPU) | tensorrt (Jetson, a .engine; README "Deploy on a Jetson")
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
    # type tensorrt: when the engine (`model`) is missing, build it at start from this .onnx,
    # .pt or .pth, at this precision (fp32 | fp16 | int8; int8 needs the calibration folder).
    build_from: str = ""
    build_precision: str = "fp16"
    build_calibration_dir: str = ""
    # int8: the share of the FP16 engine's boxes the INT8 one must find on held-back calibration
    # frames, else the FP16 engine is kept (0: no check). See README "Deploy on a Jetson".
    build_min_agreement: float = 0.85


@dataclass
class PoseConfig:
    """The pose model that runs on every processed frame."""

    # backend: litert (CPU, MoveNet) | onnxruntime (CPU, e.g. trt_pose exported to ONNX) | tensorrt
    # (Jetson, a trt_pose engine). MoveNet or trt_pose is told from the model's input layout.
    type: str = "litert"
    model: str = "models/movenet_multipose_lightning.tflite"
    input_size: int = 256
    min_person_score: float = 0.2  # MoveNet only
    min_keypoint_score: float = 0.2
    cmap_threshold: float = 0.1  # trt_pose only: part peaks below this are ignored
    link_threshold: float = 0.1  # trt_pose only: limbs whose PAF alignment is below this are cut
    threads: int = 2
    # Top-down refinement: people smaller than this fraction of the frame height get a
    # second pose pass on a crop around them, because MoveNet at 256 px loses small people.
    crop_below_height_fraction: float = 0.45
    crop_margin: float = 0.35  # box grown by this fraction on each side before cropping
    max_crops_per_frame: int = 3
    # type tensorrt: build a missing engine at start, as for the detector.
    build_from: str = ""
    build_precision: str = "fp16"
    build_calibration_dir: str = ""
    # int8: keypoint agreement (PCK at 0.1 torso) with the FP16 engine on held-back frames.
    build_min_agreement: float = 0.85


@dataclass
class TrackerConfig:
    iou_threshold: float = 0.2  # below this overlap an observation starts a new track
    max_age_s: float = 1.5  # a track not seen for this long is dropped
    down_max_age_s: float = 20.0  # ... unless it was last seen lying down
    # A skeleton that appears low or lying within handover_reach upright heights of where a track
    # stood or was falling at most handover_s ago continues that track (the pose model lost them
    # mid-fall).
    handover_s: float = 2.0
    handover_reach: float = 1.2
    min_hits: int = 2  # observations before a track is drawn and counted in health


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
    # Height collapse: the body's height against the same person's upright height (a fall towards
    # or away from the camera shrinks the body without tilting the torso in the image).
    weight_collapse: float = 0.4
    collapse_start_ratio: float = 0.7  # the collapse cue is 0 at this share of the upright height ...
    collapse_full_ratio: float = 0.4  # ... and 1 at this share
    # Hip drop against the same person standing: hips far below where they stand are not upright
    # (a fall towards a frontal camera can leave every other cue ambiguous).
    weight_descent: float = 0.4
    descent_full: float = 1.0  # the descent cue is 0 at min_descent and 1 at this many torso lengths
    foreshortened_below: float = 0.6  # torso shorter than this share of its upright length: its angle is ignored
    detector_boost_foreshortened: float = 2.0  # ... and the detector's weight is multiplied by this
    lying_enter: float = 0.55  # hysteresis: enter "down" above this ...
    lying_exit: float = 0.35  # ... and leave it below this
    upright_below: float = 0.35  # posture score that counts as an upright baseline
    min_upright_s: float = 0.4  # upright for this long before a fall can count
    # ... or this long when the hips then drop fast (a stream that starts just before a fall, a
    # person who walks in and falls at once); 0 turns the short lead-in off.
    quick_upright_s: float = 0.15
    fall_window_s: float = 3.0  # upright -> down must happen within this window
    min_descent: float = 0.35  # hip drop, in upright torso lengths
    fast_descent_speed: float = 1.5  # hips dropping this fast (torso lengths/s) make a fall candidate
    lost_confirm_s: float = 1.0  # a candidate lost this long right after a fast descent is a fall ...
    lost_min_descent: float = 0.75  # ... if its hips had dropped this far
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
class MqttConfig:
    """Events to the central VMS (see README, "MQTT topics")."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    device: str = ""  # device name in topics; empty: the host name
    prefix: str = "fall"
    keepalive_s: int = 30
    username: str = ""
    password_file: str = ""  # the password is read from this file ...
    password_env: str = "FALL_EDGE_MQTT_PASSWORD"  # ... or this variable; never from the command line
    ca_file: str = ""  # set to use TLS
    cert_file: str = ""  # client certificate (optional, with key_file)
    key_file: str = ""
    outbox_path: str = "var/outbox.sqlite"
    outbox_max_events: int = 10000
    max_inflight: int = 100
    reconnect_min_s: float = 1.0
    # at most 10: after an outage, stored alarms reach the control room within 15 s of the
    # broker's return (a longer backoff delayed them by up to 108 s)
    reconnect_max_s: float = 10.0
    health_interval_s: float = 30.0
    # The site's shared key for signed commands (HMAC-SHA256); set, unsigned commands are refused.
    command_key_file: str = ""
    command_max_age_s: float = 30.0  # a signed command older or newer than this is refused (replays)
    snapshot_dir: str = "var/snapshots"  # owner-only; pictures of people on the floor
    snapshot_keep: int = 200  # at most this many snapshots are kept (the oldest go first) ...
    snapshot_max_age_days: float = 7.0  # ... and none older than this
    snapshot_privacy: bool = False  # snapshots show the skeleton on a blank background


@dataclass
class BuzzerConfig:
    enabled: bool = False
    pin: int = 18  # BCM numbering on a Raspberry Pi; Jetson.GPIO BCM mode on a Jetson
    active_high: bool = True
    pin_factory: str = "default"  # default (gpiozero's) | jetson | mock
    fall_pattern_s: List[float] = field(default_factory=lambda: [0.15, 0.15])  # on, off: fast beeps
    alarm_pattern_s: List[float] = field(default_factory=lambda: [0.8, 0.2])  # long beeps
    auto_stop_s: float = 120.0


@dataclass
class SpeechConfig:
    enabled: bool = False
    command: str = "espeak-ng"
    alsa_device: str = ""  # e.g. plughw:1,0; empty: the default device
    voice: str = "ko"
    fall_text: str = (
        "사람이 넘어졌습니다. 가까이 계신 분은 도와주세요. 환자를 움직이지 마시고, 숨을 쉬는지 확인하세요. "
        "숨을 쉬지 않으면 일일구에 전화하세요."
    )
    alarm_text: str = (
        "넘어진 사람이 일어나지 못하고 있습니다. 지금 바로 가서 도와주세요. 환자를 움직이지 마시고, "
        "숨을 쉬는지 확인하고, 일일구에 전화하세요."
    )
    second_voice: str = "en"  # spoken after the first; empty to speak one language only
    second_fall_text: str = (
        "A person has fallen. If you are nearby, please help. Do not move them. Check that they are breathing. "
        "If they are not breathing, call emergency services."
    )
    second_alarm_text: str = (
        "The person who fell has not got up. Please go to them now. Do not move them, check their breathing, "
        "and call emergency services."
    )
    test_text: str = "낙상 경보 시험입니다. 시험입니다."
    second_test_text: str = "This is a test of the fall alarm."
    words_per_minute: int = 150
    repeat_interval_s: float = 20.0  # repeated while the alarm stands


@dataclass
class CaptureConfig:
    """How frames are read (see README, "Cameras")."""

    # auto: plain file paths with OpenCV, the rest with the best GStreamer reader here | gst (best
    # GStreamer reader) | appsink | opencv-gst | gst-launch | opencv (see edge/capture/gst_readers.py)
    reader: str = "auto"
    width: int = 640  # frames are scaled to this size by the pipeline
    height: int = 480
    fps: int = 15  # rate of csi:// and test:// sources, and of file frames read through GStreamer
    stall_timeout_s: float = 5.0  # no frame for this long: the source is restarted
    reconnect_min_s: float = 0.5  # backoff between restarts, doubling up to the max, with jitter
    reconnect_max_s: float = 30.0


@dataclass
class CameraConfig:
    name: str = "cam0"
    source: str = ""  # csi://0, v4l2:///dev/video0, rtsp://..., file:///..., test://, gst:...


@dataclass
class Config:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    fall: FallConfig = field(default_factory=FallConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    buzzer: BuzzerConfig = field(default_factory=BuzzerConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    cameras: List[CameraConfig] = field(default_factory=list)  # used when run has no --source

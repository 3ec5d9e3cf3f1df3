"""The config file's schema: one dataclass per section, every field with a justified default
and its allowed values (`setting(default, *checks)`); rules between fields of a section are its
RULES. edge/config/checks.py reads them all; the loader reports every broken one at once.

The README's "Config reference" explains each threshold; keep the two in step.
"""


import ipaddress
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Tuple

from edge.config.checks import Check, Rule, above, at_least, at_most, between, member, setting
from edge.config.rules import (
    BUILD_PRECISIONS,
    CAPTURE_READERS,
    LISTEN_RULE,
    MAX_ZONE_POINTS,
    PIN_FACTORIES,
    YOLO_LAYOUTS,
    ZONE_KINDS,
    distinct_for_home_assistant,
    listen_address,
    polygon_in_frame,
    polygon_points_ok,
    polygon_simple,
    valid_host,
    valid_input_size,
    valid_topic_level,
)

MAX_THREADS = 64  # more only thrashes (100000 hung the daemon)
MAX_MQTT_BACKOFF_S = 10.0  # alarms stored during an outage reach the control room within 15 s of its end
_INPUT_SIZE = Check(valid_input_size, "must be a multiple of 32, at least 64")
_TOPIC_NAME = Check(valid_topic_level, "must be a name of at most 100 characters without / + # or spaces at the "
                                       "ends")
# The build settings' names before they moved into a `build` section (still read from old files).
_RENAMED_BUILD_KEYS = {"build_from": "build.source", "build_precision": "build.precision",
                       "build_calibration_dir": "build.calibration_dir", "build_min_agreement": "build.min_agreement"}
_SCORE = between(0, 1)
# At most a minute each: a beep is a timer (1e308 s overflowed the timer thread).
_PATTERN = Check(lambda v: len(v) == 2 and all(0 < x <= 60 for x in v),
                 "must be [on seconds, off seconds], both above 0 and at most 60")
# The lying score is a weighted mean: weights are relative, and huge ones overflowed it to NaN
# (1e308 silenced every fall).
_WEIGHT = between(0, 10, "the cue is off")
_THREADS = between(1, MAX_THREADS)


@dataclass
class BuildConfig:
    """type tensorrt: when the engine (`model`) is missing, build it at start from `source` (an
    .onnx, .pt or .pth) at `precision`; int8 needs the calibration folder. See README "Deploy on
    a Jetson". Older files set these as build_from, build_precision, build_calibration_dir and
    build_min_agreement in the detector or pose section; they still load."""

    source: str = ""
    precision: str = setting("fp16", member(BUILD_PRECISIONS))
    calibration_dir: str = ""
    # int8: how far the INT8 engine must agree with an FP16 one on held-back calibration frames
    # (the detector: share of its boxes; pose: PCK at 0.1 torso), else the FP16 engine is kept.
    min_agreement: float = setting(0.85, between(0, 1, note="no check"))

    RULES: ClassVar[Tuple[Rule, ...]] = (
        Rule("calibration_dir", lambda b: not (b.precision == "int8" and b.source and not b.calibration_dir),
             "must name a folder of images for an int8 build"),
    )


@dataclass
class DetectorConfig:
    """The object detector (YOLO) that confirms falls and finds people the pose model misses."""

    type: str = "onnxruntime"  # backend: onnxruntime (CPU) | tensorrt (Jetson, a .engine; README "Deploy on a Jetson")
    model: str = "models/fall_yolov8s.onnx"
    layout: str = setting("auto", member(YOLO_LAYOUTS))  # yolov8 ([1,4+nc,N]) | yolov5 ([1,N,5+nc]) | auto
    input_size: int = setting(640, _INPUT_SIZE)
    class_names: List[str] = setting(["Normal", "Fall"], Check(bool, "must name at least one class"))
    fall_class: str = "Fall"
    score_threshold: float = setting(0.3, _SCORE)
    iou_threshold: float = setting(0.45, _SCORE)
    threads: int = setting(2, _THREADS)
    # Scheduling: the detector costs ~10x the pose model on a CPU, so it runs every N
    # processed frames and at once when a track starts to look like a fall.
    every_n_frames: int = setting(8, between(1, 1000))
    on_fall_candidate: bool = True
    enabled: bool = True
    build: BuildConfig = field(default_factory=BuildConfig)  # type tensorrt: a missing engine is built at start

    RENAMED: ClassVar[Dict[str, str]] = _RENAMED_BUILD_KEYS


@dataclass
class PoseConfig:
    """The pose model that runs on every processed frame."""

    # backend: litert (CPU, MoveNet) | onnxruntime (CPU, e.g. trt_pose exported to ONNX) | tensorrt
    # (Jetson, a trt_pose engine). MoveNet or trt_pose is told from the model's input layout.
    type: str = "litert"
    model: str = "models/movenet_multipose_lightning.tflite"
    input_size: int = setting(256, _INPUT_SIZE)
    min_person_score: float = setting(0.2, _SCORE)  # MoveNet only
    min_keypoint_score: float = setting(0.2, _SCORE)
    # trt_pose only: part peaks below this are ignored
    cmap_threshold: float = setting(0.1, Check(lambda v: 0 < v < 1, "must be between 0 and 1"))
    # trt_pose only: limbs whose PAF alignment is below this are cut
    link_threshold: float = setting(0.1, Check(lambda v: 0 <= v < 1, "must be between 0 and 1"))
    threads: int = setting(2, _THREADS)
    # Top-down refinement: people smaller than this fraction of the frame height get a
    # second pose pass on a crop around them, because MoveNet at 256 px loses small people.
    crop_below_height_fraction: float = setting(0.45, _SCORE)
    crop_margin: float = setting(0.35, at_least(0))  # box grown by this fraction on each side before cropping
    max_crops_per_frame: int = setting(3, between(0, 64))
    build: BuildConfig = field(default_factory=BuildConfig)  # type tensorrt: as for the detector

    RENAMED: ClassVar[Dict[str, str]] = _RENAMED_BUILD_KEYS


@dataclass
class SequenceConfig:
    """The learned sequence cue: a small GRU over each track's last two seconds of skeletons
    (scripts/train_sequence.py; README "The sequence cue"). Its score is one cue of the fall
    state machine (fall.sequence_confirm_min), never a decision on its own."""

    enabled: bool = True
    type: str = "onnxruntime"  # backend: ONNX Runtime's CPU build, on a Jetson too (the model is 31 KB)
    model: str = "models/fall_sequence.onnx"
    threads: int = setting(1, _THREADS)


@dataclass
class TrackerConfig:
    iou_threshold: float = setting(0.2, _SCORE)  # below this overlap an observation starts a new track
    max_age_s: float = setting(1.5, above(0))  # a track not seen for this long is dropped
    down_max_age_s: float = 20.0  # ... unless it was last seen lying down
    # A skeleton that appears low or lying within handover_reach upright heights of where a track
    # stood or was falling at most handover_s ago continues that track (the pose model lost them
    # mid-fall).
    handover_s: float = setting(2.0, at_least(0, "no handover"))
    handover_reach: float = setting(1.2, at_least(0))
    min_hits: int = setting(2, at_least(1))  # observations before a track is drawn and counted in health

    RULES: ClassVar[Tuple[Rule, ...]] = (
        Rule("down_max_age_s", lambda t: t.down_max_age_s >= t.max_age_s, "must be at least tracker.max_age_s"),
    )


@dataclass
class FallConfig:
    """Thresholds of the per-track state machine (see README, "Why these defaults")."""

    # Lying posture score = weighted mean of three cues, each mapped to 0..1.
    torso_angle_low_deg: float = 40.0  # torso this close to vertical scores 0
    torso_angle_high_deg: float = 70.0  # ... this close to horizontal scores 1
    aspect_low: float = 0.9  # bbox width/height scoring 0
    aspect_high: float = 1.5  # ... and 1
    weight_torso_angle: float = setting(0.4, _WEIGHT)
    weight_aspect: float = setting(0.3, _WEIGHT)
    weight_detector: float = setting(0.3, _WEIGHT)
    # Height collapse: the body's height against the same person's upright height (a fall towards
    # or away from the camera shrinks the body without tilting the torso in the image).
    weight_collapse: float = setting(0.4, _WEIGHT)
    collapse_start_ratio: float = 0.7  # the collapse cue is 0 at this share of the upright height ...
    collapse_full_ratio: float = 0.4  # ... and 1 at this share
    # Hip drop against the same person standing: hips far below where they stand are not upright
    # (a fall towards a frontal camera can leave every other cue ambiguous).
    weight_descent: float = setting(0.4, _WEIGHT)
    descent_full: float = 1.0  # the descent cue is 0 at min_descent and 1 at this many torso lengths
    # A torso shorter than this share of its upright length: its angle is ignored ...
    foreshortened_below: float = setting(0.6, Check(lambda v: 0 < v <= 1, "must be above 0 and at most 1"))
    detector_boost_foreshortened: float = setting(2.0, at_least(1))  # ... and the detector's weight times this
    lying_enter: float = setting(0.55, _SCORE)  # hysteresis: enter "down" above this ...
    lying_exit: float = setting(0.35, _SCORE)  # ... and leave it below this
    upright_below: float = setting(0.35, _SCORE)  # posture score that counts as an upright baseline
    min_upright_s: float = setting(0.4, at_least(0))  # upright for this long before a fall can count
    # ... or this long when the hips then drop fast (a stream that starts just before a fall, a
    # person who walks in and falls at once); 0 turns the short lead-in off.
    quick_upright_s: float = setting(0.1, at_least(0))
    fall_window_s: float = setting(3.0, at_least(0))  # upright -> down must happen within this window
    min_descent: float = setting(0.35, at_least(0))  # hip drop, in upright torso lengths
    # hips dropping this fast (torso lengths/s) make a fall candidate
    fast_descent_speed: float = setting(1.5, above(0))
    # a candidate lost this long right after a fast descent is a fall ...
    lost_confirm_s: float = setting(1.0, at_least(0))
    lost_min_descent: float = setting(0.75, at_least(0))  # ... if its hips had dropped this far
    confirm_s: float = setting(0.4, at_least(0))  # lying this long confirms the fall (fall_detected)
    alarm_hold_s: float = setting(3.0, at_least(0))  # still down this long after the fall: alarm
    recover_s: float = setting(1.5, at_least(0))  # upright this long after a fall: recovered
    require_upright_baseline: bool = True  # False: someone found lying also alarms
    detector_max_age_s: float = setting(1.5, at_least(0))  # a detector score older than this is ignored
    # Seated (a torso within seated_torso_max_deg of vertical over knees less than
    # seated_thigh_drop_max torso lengths below the hips): a baseline formed so is a seated one,
    # and a fall from it is the hips leaving the seat, up or down the picture, not dropping below it.
    seated_torso_max_deg: float = setting(30.0, between(0, 90))
    seated_thigh_drop_max: float = setting(0.4, between(0, 2))
    # The learned sequence cue (section `sequence`) must score at least this over the candidate's
    # last sequence_window_s before a fall is confirmed from a skeleton: push-ups and other
    # exercise go down under control and score near 0 (README "The sequence cue"). 0: no veto.
    sequence_confirm_min: float = setting(0.3, _SCORE)
    sequence_window_s: float = setting(2.0, above(0))
    # Lowered by someone else (a carer's transfer to the floor or a mat): a candidate whose hips never
    # dropped at fast_descent_speed, with another person's skeleton within helper_reach (gap between
    # the two boxes, in the helper's own heights: an arm's reach) on at least helper_share of its frames,
    # is not a fall. 0 turns the rule off.
    helper_reach: float = setting(0.25, between(0, 2, "off"))
    helper_share: float = setting(0.8, between(0, 1))

    RULES: ClassVar[Tuple[Rule, ...]] = (
        Rule("torso_angle_low_deg", lambda f: f.torso_angle_low_deg < f.torso_angle_high_deg,
             "must be below fall.torso_angle_high_deg"),
        Rule("aspect_low", lambda f: f.aspect_low < f.aspect_high, "must be below fall.aspect_high"),
        Rule("collapse_full_ratio", lambda f: 0 < f.collapse_full_ratio < f.collapse_start_ratio <= 1.5,
             "must be above 0 and below fall.collapse_start_ratio (at most 1.5)"),
        Rule("descent_full", lambda f: f.descent_full > f.min_descent, "must be above fall.min_descent"),
        Rule("weight_torso_angle", lambda f: f.weight_torso_angle + f.weight_aspect > 0,
             "and fall.weight_aspect cannot both be 0"),
        Rule("lying_exit", lambda f: f.lying_exit < f.lying_enter, "must be below fall.lying_enter (hysteresis)"),
        Rule("upright_below", lambda f: f.upright_below <= f.lying_exit, "must not exceed fall.lying_exit"),
        Rule("quick_upright_s", lambda f: f.quick_upright_s <= f.min_upright_s, "must not exceed fall.min_upright_s"),
    )


@dataclass
class OutputConfig:
    camera: str = setting("cam0", _TOPIC_NAME)
    process_fps: float = setting(10.0, at_least(0, "every frame"))  # frames per second the pipeline processes
    # Several cameras on one box: each keeps at least this many processed frames a second; below it
    # the work per frame is shed by rule (README "Several cameras"). 0: never shed.
    min_process_fps: float = setting(5.0, at_least(0, "never shed"))
    # The device's own page (live view, /health, /metrics) on HOST:PORT; empty: off. It shows
    # people: keep it on 127.0.0.1 and reach it over an SSH tunnel (README "The device's page").
    http: str = setting("", Check(lambda v: v == "" or listen_address(v) is not None, LISTEN_RULE))
    http_max_fps: float = setting(5.0, between(0.5, 30))  # the live view's frame rate cap


@dataclass
class MqttConfig:
    """Events to the central VMS (see README, "MQTT topics")."""

    enabled: bool = False
    host: str = setting("127.0.0.1", Check(valid_host, "must be the broker's host name or address (not empty, "
                                                         "no spaces)"))
    port: int = setting(1883, between(1, 65535))
    # device name in topics; empty: the host name
    device: str = setting("", Check(lambda v: v == "" or valid_topic_level(v), _TOPIC_NAME.rule))
    prefix: str = setting("fall", _TOPIC_NAME)
    keepalive_s: int = setting(30, between(1, 65535))
    username: str = ""
    password_file: str = ""  # the password is read from this file ...
    password_env: str = "FALL_EDGE_MQTT_PASSWORD"  # ... or this variable; never from the command line
    ca_file: str = ""  # set to use TLS
    cert_file: str = ""  # client certificate (optional, with key_file)
    key_file: str = ""
    outbox_path: str = "var/outbox.sqlite"
    outbox_max_events: int = setting(10000, between(1, 10_000_000))
    max_inflight: int = setting(100, between(1, 65535))
    reconnect_min_s: float = setting(1.0, above(0))
    # at most 10: after an outage, stored alarms reach the control room within 15 s of the
    # broker's return (a longer backoff delayed them by up to 108 s)
    reconnect_max_s: float = setting(
        MAX_MQTT_BACKOFF_S, at_most(MAX_MQTT_BACKOFF_S, "alarms must reach the control room soon after the broker "
                                                        "is back"))
    health_interval_s: float = setting(30.0, above(0))
    # The site's shared key for signed commands (HMAC-SHA256); set, unsigned commands are refused.
    command_key_file: str = ""
    # a signed command older or newer than this is refused (replays)
    command_max_age_s: float = setting(30.0, between(1, 3600))
    snapshot_dir: str = "var/snapshots"  # owner-only; pictures of people on the floor
    # at most this many snapshots are kept (the oldest go first) ...
    snapshot_keep: int = setting(200, at_least(0, "keep none on disk"))
    snapshot_max_age_days: float = setting(7.0, above(0))  # ... and none older than this
    snapshot_privacy: bool = False  # snapshots show the skeleton on a blank background

    # The client (edge/mqtt/connection.py) checks these too: it is also built from command-line options.
    TLS_RULES: ClassVar[Tuple[Rule, ...]] = (
        Rule("cert_file", lambda m: bool(m.cert_file) == bool(m.key_file),
             "and 'mqtt.key_file' go together: set both or neither"),
        Rule("cert_file", lambda m: not m.cert_file or bool(m.ca_file), "needs mqtt.ca_file (TLS) as well"),
    )
    RULES: ClassVar[Tuple[Rule, ...]] = TLS_RULES + (
        Rule("reconnect_min_s", lambda m: m.reconnect_min_s <= m.reconnect_max_s,
             "must be above 0 and at most mqtt.reconnect_max_s"),
    )


CLIP_MAX_WIDTH = 1920  # clip.width 0 ("as captured") keeps frames at most this wide
CLIP_MAX_MB_PER_CAMERA = 256
CLIP_MAX_MB_PER_DEVICE = 512


def clip_megabytes(clip: "ClipConfig") -> float:
    """What one camera's clip frames can hold at once: (pre_s + post_s) x fps frames (the ring and
    a clip being filled) at clip.width (CLIP_MAX_WIDTH for 0) by 3/4 of it (4:3, the tallest
    common shape), 3 bytes a pixel."""
    width = clip.width or CLIP_MAX_WIDTH
    return (clip.pre_s + clip.post_s) * clip.fps * width * (width * 3 // 4) * 3 / 1e6


_CLIP_MEMORY = (f"(pre_s + post_s) x fps x width x 3/4 width x 3 bytes (width 0 counts as {CLIP_MAX_WIDTH}) "
                "must stay within {} MB; lower clip.fps, clip.width or the seconds")


@dataclass
class ClipConfig:
    """A short video of every fall and intrusion (README "Event clips"): the seconds before it from
    a ring buffer, and the seconds after, drawn like --save-video (skeletons on a plain background
    under mqtt.snapshot_privacy), stored owner-only and sent to the control room."""

    enabled: bool = True
    pre_s: float = setting(5.0, between(0, 30))  # seconds before the event, kept in memory per camera
    post_s: float = setting(5.0, between(0, 30))  # seconds after it
    fps: float = setting(10.0, between(1, 30))  # frames kept per second (at most the processed rate)
    # kept frames are scaled to this width (0: as captured); memory per camera is
    # pre_s * fps * width * height * 3 bytes: 640x360 at 10 fps for 5 s is 35 MB
    width: int = setting(640, Check(lambda v: v == 0 or 160 <= v <= 3840, "must be 0 (as captured) or 160 to 3840"))
    dir: str = "var/clips"  # owner-only: videos of people
    keep: int = setting(100, at_least(0, "keep none on disk"))  # at most this many on disk ...
    max_age_days: float = setting(7.0, above(0))  # ... none older than this
    # larger clips stay on the device, and the control room is told so
    max_send_bytes: int = setting(2_000_000, between(0, 8_000_000, "send none"))

    # A ring of 30 s at 30 fps unscaled was accepted: about 1.9 GB a 1080p camera, an OOM kill on
    # any Jetson (issue 40, defect 10).
    RULES: ClassVar[Tuple[Rule, ...]] = (
        Rule("fps", lambda c: clip_megabytes(c) <= CLIP_MAX_MB_PER_CAMERA,
             "makes each camera's clip memory too large: "
             + _CLIP_MEMORY.format(CLIP_MAX_MB_PER_CAMERA)),
    )


@dataclass
class HomeAssistantConfig:
    """MQTT discovery for Home Assistant (README "Home Assistant"): on the same broker as `mqtt`."""

    enabled: bool = False
    discovery_prefix: str = setting("homeassistant", _TOPIC_NAME)  # Home Assistant's default


@dataclass
class BuzzerConfig:
    enabled: bool = False
    # BCM numbering on a Raspberry Pi; Jetson.GPIO BCM mode on a Jetson
    pin: int = setting(18, Check(lambda v: 0 <= v <= 40, "must be a GPIO number from 0 to 40"))
    active_high: bool = True
    pin_factory: str = setting("default", member(PIN_FACTORIES))  # default (gpiozero's) | jetson | mock
    fall_pattern_s: List[float] = setting([0.15, 0.15], _PATTERN)  # on, off: fast beeps
    alarm_pattern_s: List[float] = setting([0.8, 0.2], _PATTERN)  # long beeps
    zone_pattern_s: List[float] = setting([0.05, 0.1], _PATTERN)  # danger zone: chirps, unlike a fall's beeps ...
    zone_warning_s: float = setting(3.0, between(0.5, 60))  # ... for this long (a fall's pattern takes over)
    auto_stop_s: float = setting(120.0, above(0))


@dataclass
class SpeechConfig:
    enabled: bool = False
    command: str = "espeak-ng"
    alsa_device: str = ""  # e.g. plughw:1,0; empty: the default device
    voice: str = setting("ko", Check(lambda v: bool(v.strip()), "must name an espeak-ng voice (e.g. ko)"))
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
    intrusion_text: str = "위험 구역입니다. 즉시 밖으로 나가세요."
    second_intrusion_text: str = "Danger area. Step out of it now."
    approaching_text: str = "위험 구역에 다가가고 있습니다. 멈추세요."
    second_approaching_text: str = "You are walking into a danger area. Stop."
    test_text: str = "낙상 경보 시험입니다. 시험입니다."
    second_test_text: str = "This is a test of the fall alarm."
    words_per_minute: int = setting(150, between(80, 450))
    repeat_interval_s: float = setting(20.0, above(0))  # repeated while the alarm stands


@dataclass
class CaptureConfig:
    """How frames are read (see README, "Cameras")."""

    # auto: plain file paths with OpenCV, the rest with the best GStreamer reader here | gst (best
    # GStreamer reader) | appsink | opencv-gst | gst-launch | opencv (see edge/capture/gst_readers.py)
    reader: str = setting("auto", Check(lambda v: v in CAPTURE_READERS, "must be one of " + ", ".join(CAPTURE_READERS)))
    # frames are scaled to this size by the pipeline
    width: int = setting(640, Check(lambda v: 16 <= v <= 7680 and v % 2 == 0, "must be even, 16 to 7680"))
    height: int = setting(480, Check(lambda v: 16 <= v <= 4320 and v % 2 == 0, "must be even, 16 to 4320"))
    fps: int = setting(15, between(1, 120))  # rate of csi:// and test:// sources, and of file frames through GStreamer
    stall_timeout_s: float = setting(5.0, above(0))  # no frame for this long: the source is restarted
    reconnect_min_s: float = setting(0.5, above(0))  # backoff between restarts, doubling up to the max, with jitter
    reconnect_max_s: float = 30.0

    RULES: ClassVar[Tuple[Rule, ...]] = (
        Rule("reconnect_min_s", lambda c: c.reconnect_min_s <= c.reconnect_max_s,
             "must be above 0 and at most capture.reconnect_max_s"),
    )


@dataclass
class ZoneConfig:
    """An area of one camera's picture (README "Zones"): `bed` (lying there is not a fall; ending on
    the floor outside it is), `danger` (a warning when someone's feet are in it or heading there)
    or `watch` (with any watch zone, falls count only inside them). Points are shares of the frame."""

    name: str = setting("", _TOPIC_NAME)
    kind: str = setting("bed", member(ZONE_KINDS))
    polygon: List[List[float]] = setting(
        [], Check(polygon_points_ok, f"must be 3 to {MAX_ZONE_POINTS} points, each [x, y]"),
        Check(polygon_in_frame, "must have every x and y between 0 and 1: shares of the frame's width and height, "
                                "not pixels"),
        Check(polygon_simple, "must enclose an area without crossing itself: list the points in order around "
                              "the zone, each once"))
    # danger zones: feet inside this long make an `intrusion` ...
    min_dwell_s: float = setting(0.5, between(0, 60))
    # ... heading in at the current speed within this many seconds makes an `approaching` warning (0: off)
    lookahead_s: float = setting(2.0, between(0, 10))
    cooldown_s: float = setting(30.0, between(0, 3600))  # one warning per person and zone this often


# Unique also as Home Assistant ids: spaces and other characters become _ and case is ignored there,
# so 'press 1' and 'press_1' were one sensor (issue 40, defect 9).
_HA_DISTINCT = ("must be unique, also once spaces and other characters become _ and case is ignored "
                "(Home Assistant's ids: 'ward 1', 'ward_1' and 'Ward_1' are one)")
_ZONE_NAMES_UNIQUE = _HA_DISTINCT.replace("must be unique", "must be unique within a camera", 1)


def _unique_zone_names(zones: List[ZoneConfig]) -> bool:
    return distinct_for_home_assistant([zone.name for zone in zones])


@dataclass
class CameraConfig:
    name: str = setting("cam0", _TOPIC_NAME)
    # csi://0, v4l2:///dev/video0, rtsp://..., file:///..., test://, gst:...
    source: str = setting("", Check(lambda v: bool(v.strip()), "must not be empty"))
    zones: List[ZoneConfig] = field(default_factory=list)

    RULES: ClassVar[Tuple[Rule, ...]] = (
        Rule("zones[].name", lambda c: _unique_zone_names(c.zones), _ZONE_NAMES_UNIQUE),
    )


def _ip_address(text: object) -> bool:
    try:
        ipaddress.ip_address(str(text))
    except ValueError:
        return False
    return isinstance(text, str)


@dataclass
class OperatorConfig:
    """One control-room operator of the web console; the hash comes from `fall-edge console-password`."""

    name: str = setting("", Check(lambda v: 0 < len(v) <= 64 and v == v.strip() and v.isprintable(),
                                  "must be a name of 1 to 64 printable characters"))
    password_hash: str = setting("", Check(lambda v: v.startswith(("scrypt:", "pbkdf2:")),
                                           "must be a hash printed by `fall-edge console-password` "
                                           "(scrypt:... or pbkdf2:...), never the password"))


@dataclass
class ConsoleConfig:
    """The control room's web console (`fall-edge console`, README "The control room in a browser")."""

    listen: str = setting("127.0.0.1:8080", Check(lambda v: listen_address(v) is not None, LISTEN_RULE))
    db: str = "var/console.sqlite"  # the event log (owner-only): events, devices, health, snapshots
    operators: List[OperatorConfig] = field(default_factory=list)
    # Behind a reverse proxy that logs operators in: the header naming the operator (e.g.
    # X-Forwarded-User). Only safe when the console listens where only the proxy reaches it.
    auth_header: str = ""
    # The reverse proxies in front (e.g. [127.0.0.1]): from them, the client's address is the last
    # X-Forwarded-For entry, so the login lockout tells people apart (without it, everyone behind
    # the proxy is 127.0.0.1 and one stranger's guesses lock every operator out).
    trusted_proxies: List[str] = setting([], Check(lambda v: all(_ip_address(a) for a in v),
                                                   "must list IP addresses (e.g. [127.0.0.1])"))
    session_hours: float = setting(12.0, between(0.1, 168))  # a login lasts this long
    secure_cookie: bool = False  # true when served over HTTPS (the session cookie is then never sent in clear)
    snapshot_keep: int = setting(1000, at_least(0))  # pictures of people: at most this many per device ...
    snapshot_max_age_days: float = setting(30.0, above(0))  # ... and none older than this

    RULES: ClassVar[Tuple[Rule, ...]] = (
        Rule("operators[].name", lambda c: len({o.name for o in c.operators}) == len(c.operators), "must be unique"),
    )


@dataclass
class Config:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    pose: PoseConfig = field(default_factory=PoseConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    fall: FallConfig = field(default_factory=FallConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    buzzer: BuzzerConfig = field(default_factory=BuzzerConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    cameras: List[CameraConfig] = field(default_factory=list)  # used when run has no --source
    zones: List[ZoneConfig] = field(default_factory=list)  # the zones of a camera not in `cameras` (run --source)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)  # fall-edge console, not the device

    RULES: ClassVar[Tuple[Rule, ...]] = (
        Rule("cameras[].name", lambda c: distinct_for_home_assistant([camera.name for camera in c.cameras]),
             _HA_DISTINCT),
        Rule("zones[].name", lambda c: _unique_zone_names(c.zones), _ZONE_NAMES_UNIQUE),
        Rule("homeassistant.enabled", lambda c: not c.homeassistant.enabled or c.mqtt.enabled,
             "needs mqtt.enabled (discovery goes through the device's MQTT connection)"),
        Rule("clip.fps", lambda c: not c.clip.enabled or clip_megabytes(c.clip) > CLIP_MAX_MB_PER_CAMERA
             or clip_megabytes(c.clip) * max(1, len(c.cameras)) <= CLIP_MAX_MB_PER_DEVICE,
             "makes the clip memory of all cameras too large: cameras x "
             + _CLIP_MEMORY.format(CLIP_MAX_MB_PER_DEVICE)),
    )

    def zones_of(self, camera: str) -> List[ZoneConfig]:
        """A camera's zones: those listed with it under `cameras`, else the top-level `zones`."""
        listed = next((c for c in self.cameras if c.name == camera), None)
        return listed.zones if listed is not None else self.zones

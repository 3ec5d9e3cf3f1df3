"""Values that flow between the stages: frame -> detections/people -> tracks -> events."""


from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:  # for the annotation only: tracking imports these types, not the other way
    from edge.tracking.tracker import Track

# The 18-point skeleton used downstream, in trt_pose's order (COCO-17 plus a neck).
KEYPOINT_NAMES: Tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "neck",
)
KEYPOINT_INDEX: Dict[str, int] = {name: index for index, name in enumerate(KEYPOINT_NAMES)}
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# Limbs drawn on screen, as pairs of keypoint names.
SKELETON_EDGES: Tuple[Tuple[str, str], ...] = (
    ("left_ankle", "left_knee"),
    ("left_knee", "left_hip"),
    ("right_ankle", "right_knee"),
    ("right_knee", "right_hip"),
    ("left_hip", "right_hip"),
    ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"),
    ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"),
    ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"),
    ("right_elbow", "right_wrist"),
    ("neck", "nose"),
    ("nose", "left_eye"),
    ("nose", "right_eye"),
    ("left_eye", "left_ear"),
    ("right_eye", "right_ear"),
)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in frame pixels."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def center(self) -> Tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    def as_list(self) -> List[float]:
        return [round(self.x1, 1), round(self.y1, 1), round(self.x2, 1), round(self.y2, 1)]


@dataclass
class Detection:
    """One box from the object detector (YOLO), in frame pixels."""

    box: Box
    score: float
    class_id: int
    label: str
    class_scores: Tuple[float, ...] = ()  # every class's score for this box, in class order


@dataclass
class Person:
    """One person from the pose model: a box and 18 keypoints (x, y, score) in frame pixels."""

    box: Box
    score: float
    keypoints: np.ndarray  # shape (18, 3): x, y, score

    def __post_init__(self) -> None:
        if self.keypoints.shape != (NUM_KEYPOINTS, 3):
            raise ValueError(f"keypoints must be ({NUM_KEYPOINTS}, 3), got {self.keypoints.shape}")


@dataclass
class Observation:
    """What one frame says about one person: a pose (person), or only a detector's box. The
    detector's fall vote reaches tracks on its own path (FallPipeline), not through here."""

    box: Box
    person: Optional[Person] = None  # None: the detector saw someone the pose model missed


@dataclass
class Frame:
    """A decoded BGR frame with its place in the stream."""

    image: np.ndarray  # HxWx3 uint8 BGR
    index: int  # sequence number from the source, starting at 0
    time_s: float  # stream time: position in a file, or seconds since a live stream opened


class EventType(str, Enum):
    """What an event says. A str, so JSON, the outbox and the monitor see the plain names."""

    FALL_DETECTED = "fall_detected"
    ALARM = "alarm"  # still down alarm_hold_s after the fall
    RECOVERED = "recovered"
    ACKNOWLEDGED = "acknowledged"  # by an operator, from the control room
    INTRUSION = "intrusion"  # feet in a danger zone for its min_dwell_s
    APPROACHING = "approaching"  # heading into a danger zone within its lookahead_s
    INTRUSION_CLEARED = "intrusion_cleared"  # out of it again

    def __str__(self) -> str:  # the name in f-strings and logs on every Python version
        return str(self.value)

    __format__ = str.__format__
    __hash__ = str.__hash__  # Enum hashes the name: as a dict key it must be its string

    @property
    def opens_alarm(self) -> bool:
        """fall_detected and alarm sound the local alarm and open an alarm in the control room."""
        return self in (EventType.FALL_DETECTED, EventType.ALARM)

    @property
    def is_zone_warning(self) -> bool:
        """intrusion and approaching: a warning at the site (a beep and a sentence, once)."""
        return self in (EventType.INTRUSION, EventType.APPROACHING)


class AcknowledgedChains:
    """Falls an operator acknowledged. The same fall's later `alarm` (still down after the hold) is
    then not a new alarm: not sounded at the site, not shown open in the control room. A new
    `fall_detected` on the track, or a recovery, ends it. The local alarm, the monitor and the
    console's log each keep one, keyed by whatever names a fall's chain there; bounded, since
    tracks also end without a recovery."""

    def __init__(self, limit: int = 10000) -> None:
        self.limit = limit
        self._acks: Dict[Hashable, object] = {}  # chain -> what acknowledged it

    def acknowledged(self, chain: Hashable, by: object = True) -> None:
        if chain not in self._acks and len(self._acks) >= self.limit:
            del self._acks[next(iter(self._acks))]  # the oldest
        self._acks[chain] = by

    def repeat_of(self, kind: str, chain: Hashable) -> Optional[object]:
        """What acknowledged the fall that an event of `kind` on `chain` repeats (an `alarm` after
        an ack), else None; a `fall_detected` or `recovered` ends the chain's acknowledgement."""
        if kind in (EventType.FALL_DETECTED, EventType.RECOVERED):
            self._acks.pop(chain, None)
            return None
        return self._acks.get(chain) if kind == EventType.ALARM else None


@dataclass
class FallEvent:
    """Something the control room and the site must hear about."""

    event_id: str
    type: EventType
    camera: str
    track_id: int
    stream_time_s: float
    wall_time: str  # ISO 8601 UTC
    confidence: float
    torso_angle_deg: Optional[float]
    bbox: List[float]
    fall_started_s: Optional[float] = None
    started_at: Optional[str] = None  # ISO 8601 UTC wall time of fall_started_s
    detector_label: Optional[str] = None
    keypoints: Optional[List[List[float]]] = None  # 18 x (x, y, score), trt_pose order
    extra: Dict[str, float] = field(default_factory=dict)
    acknowledges: Optional[str] = None  # acknowledged: the event_id the control room acknowledged ...
    operator: Optional[str] = None  # ... and who did (from the command), when it said
    zone: Optional[str] = None  # the zone an intrusion/approaching/intrusion_cleared (or a watched fall) is about

    def __post_init__(self) -> None:
        self.type = EventType(self.type)  # a plain name (from JSON) becomes the enum; a bad one raises

    def to_dict(self) -> Dict[str, object]:
        return {
            "event_id": self.event_id,
            "type": self.type.value,
            "camera": self.camera,
            "track_id": self.track_id,
            "stream_time_s": round(self.stream_time_s, 3),
            "ts": self.wall_time,
            "fall_started_s": None if self.fall_started_s is None else round(self.fall_started_s, 3),
            "confidence": round(self.confidence, 3),
            "torso_angle_deg": None if self.torso_angle_deg is None else round(self.torso_angle_deg, 1),
            "bbox": self.bbox,
            "started_at": self.started_at,
            "detector_label": self.detector_label,
            **{key: round(value, 3) for key, value in self.extra.items()},
            **({"acknowledges": self.acknowledges, "operator": self.operator} if self.acknowledges else {}),
            **({"zone": self.zone} if self.zone is not None else {}),
        }


@dataclass
class FrameResult:
    """What the pipeline made of one frame: the tracks, the events, and what ran."""

    frame: Frame
    tracks: List["Track"]
    events: List[FallEvent]
    detector_ran: bool
    crops: List[Box] = field(default_factory=list)
    camera: str = ""
    min_hits: int = 1  # tracker.min_hits: tracks seen fewer times are not drawn (one-frame blips)
    zones: Sequence[Any] = ()  # the camera's zones (config ZoneConfig), drawn on the picture

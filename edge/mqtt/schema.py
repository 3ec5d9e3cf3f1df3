"""What a well-formed message on the broker looks like, checked field by field.

The control room reads messages from every device on the broker; one malformed or hostile
message must be skipped with a reason, never raise in the MQTT thread. Hand-written rather
than jsonschema: the current jsonschema needs a Rust extension and Python 3.8+, and this is
the whole schema.
"""


import base64
import binascii
import json
import math
import uuid
from typing import Dict, Optional, Tuple

from edge.types import EventType

_NUMBER = (int, float)
_OPTIONAL = True

# field: (allowed types, may be null)
_EVENT_FIELDS: Dict[str, Tuple[tuple, bool]] = {
    "event_id": ((str,), False),
    "type": ((str,), False),
    "track_id": ((int,), False),
    "seq": ((int,), _OPTIONAL),
    "device": ((str,), _OPTIONAL),
    "camera": ((str,), _OPTIONAL),
    "started_at": ((str,), _OPTIONAL),
    "ts": ((str,), _OPTIONAL),
    "stream_time_s": (_NUMBER, _OPTIONAL),
    "confidence": (_NUMBER, _OPTIONAL),
    "torso_angle_deg": (_NUMBER, _OPTIONAL),
    "bbox": ((list,), _OPTIONAL),
    "keypoints": ((list,), _OPTIONAL),
    "detector_label": ((str,), _OPTIONAL),
    "snapshot": ((str,), _OPTIONAL),
    "fall_started_s": (_NUMBER, _OPTIONAL),
    "hip_descent": (_NUMBER, _OPTIONAL),
    "descent_speed": (_NUMBER, _OPTIONAL),
    "operator": ((str,), _OPTIONAL),
    "acknowledges": ((str,), _OPTIONAL),
    "zone": ((str,), _OPTIONAL),
    "seconds_to_enter": (_NUMBER, _OPTIONAL),
}
_REQUIRED = tuple(name for name, (_, nullable) in _EVENT_FIELDS.items() if not nullable)
_MAX_TEXT = 200
# An event is a flat object with a few lists (bbox, keypoints: [[x, y, score], ...]); a field a
# newer device adds may nest a little more, never deeper than this. Anything deeper is not an
# event, and rendering it would recurse past Python's limit on every page that shows it.
MAX_NESTING = 5
MAX_EVENT_BYTES = 65536


def nesting_depth(value: object, limit: int = MAX_NESTING) -> int:
    """How deeply lists and objects nest in decoded JSON (a scalar is 0), counted without
    recursion and no further than limit + 1."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            depth += 1
            deepest = max(deepest, depth)
            if depth > limit:
                return depth
            stack.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _type_problem(name: str, value: object, types: tuple, nullable: bool) -> Optional[str]:
    if value is None:
        return None if nullable else f"{name} is null"
    if isinstance(value, bool) or not isinstance(value, types):  # bool is an int to Python, not here
        return f"{name} has the wrong type ({type(value).__name__})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} is not a finite number"
    if isinstance(value, str) and len(value) > _MAX_TEXT:
        return f"{name} is longer than {_MAX_TEXT} characters"
    return None


def event_problem(event: object, device: str, camera: str) -> Optional[str]:
    """Why this decoded JSON is not an event from `device`'s `camera`, or None when it is one."""
    if not isinstance(event, dict):
        return "not a JSON object"
    if nesting_depth(event) > MAX_NESTING:
        return f"nested deeper than {MAX_NESTING} levels"
    for name in _REQUIRED:
        if name not in event:
            return f"{name} missing"
    for name, value in event.items():
        if name not in _EVENT_FIELDS:
            continue  # newer devices may add fields
        problem = _type_problem(name, value, *_EVENT_FIELDS[name])
        if problem:
            return problem
    if event["type"] not in {kind.value for kind in EventType}:
        return f"type {event['type']!r} is not one of {', '.join(kind.value for kind in EventType)}"
    try:
        uuid.UUID(event["event_id"])
    except ValueError:
        return "event_id is not a UUID"
    for name, expected in (("device", device), ("camera", camera)):
        if event.get(name) is not None and event[name] != expected:
            return f"{name} {event[name]!r} differs from the topic's {expected!r}"
    bbox = event.get("bbox")
    if bbox is not None and (len(bbox) != 4 or any(isinstance(v, bool) or not isinstance(v, _NUMBER) for v in bbox)):
        return "bbox is not four numbers"
    return None


# A health report's fields as the console shows them (edge/daemon/health.py writes them): each
# checked before it is stored, so one odd report cannot break the page every operator reads.
_COUNT = (int,)
_HEALTH_FIELDS: Dict[str, Tuple[tuple, Optional[tuple]]] = {  # field: (types, mapping's value types)
    "device": ((str,), None),
    "ts": ((str,), None),
    "uptime_s": (_NUMBER, None),
    "frames_processed": (_COUNT, None),
    "processed_fps": (_NUMBER, None),
    "stage_fps": ((dict,), _NUMBER),
    "dropped_frames": (_COUNT, None),
    "cameras": ((dict,), (dict,)),
    "tracks": (_COUNT, None),
    "events": ((dict,), _COUNT),
    "outbox_depth": (_COUNT, None),
    "outbox_dropped": (_COUNT, None),
    "outbox_memory": (_COUNT, None),
    "outbox_error": ((str, type(None)), None),
    "alarm_problems": ((dict,), (str,)),
    "mqtt_outages": (_COUNT, None),
    "commands_refused": (_COUNT, None),
    "commands_failed": (_COUNT, None),
    "temperatures_c": ((dict,), _NUMBER),
    "python": ((str,), None),
    "engines": ((dict,), (dict,)),
}
_MAX_HEALTH_ENTRIES = 64  # cameras, thermal zones, stages, ... per report
_HEALTH_NESTING = 4  # report -> cameras -> camera -> counters


def _plain_value_problem(name: str, value: object, types: tuple) -> Optional[str]:
    if isinstance(value, bool) or not isinstance(value, types):
        return f"{name} has the wrong type ({type(value).__name__})"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} is not a finite number"
    if isinstance(value, str) and len(value) > 500:
        return f"{name} is longer than 500 characters"
    return None


def health_problem(report: object) -> Optional[str]:
    """Why this decoded JSON is not a health report the console can show, or None. Unknown
    fields (a newer device's) are allowed within the nesting limit."""
    if not isinstance(report, dict):
        return "not a JSON object"
    if nesting_depth(report, _HEALTH_NESTING) > _HEALTH_NESTING:
        return f"nested deeper than {_HEALTH_NESTING} levels"
    for name, value in report.items():
        if name not in _HEALTH_FIELDS:
            continue
        types, value_types = _HEALTH_FIELDS[name]
        problem = _plain_value_problem(name, value, types)
        if problem:
            return problem
        if value_types is not None and isinstance(value, dict):
            if len(value) > _MAX_HEALTH_ENTRIES:
                return f"{name} has more than {_MAX_HEALTH_ENTRIES} entries"
            for key, item in value.items():
                problem = _plain_value_problem(f"{name}.{key}"[:80], item, value_types)
                if problem or len(key) > 80:
                    return problem or f"{name} has a key longer than 80 characters"
    return None


_SNAPSHOT_TAG = b"fall-edge event "


def tag_snapshot(jpeg: bytes, event_id: str) -> bytes:
    """The JPEG with a comment segment naming its event, after the start marker and the JFIF
    header: every viewer ignores it, and the console pairs the retained snapshot with its event."""
    if not jpeg.startswith(b"\xff\xd8"):
        return jpeg
    at = 2
    if jpeg[2:4] == b"\xff\xe0":  # JFIF's APP0 comes first
        at = 4 + int.from_bytes(jpeg[4:6], "big")
    text = _SNAPSHOT_TAG + event_id.encode("ascii")
    return jpeg[:at] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[at:]


def snapshot_event_id(jpeg: bytes) -> Optional[str]:
    """The event a snapshot shows (its tag_snapshot comment), or None for an untagged picture."""
    at = 2
    for _ in range(4):  # the tag sits among the first segments
        if jpeg[at:at + 1] != b"\xff" or len(jpeg) < at + 4:
            return None
        marker, length = jpeg[at + 1], int.from_bytes(jpeg[at + 2:at + 4], "big")
        text = jpeg[at + 4:at + 2 + length]
        if marker == 0xFE and text.startswith(_SNAPSHOT_TAG):
            try:
                return str(uuid.UUID(text[len(_SNAPSHOT_TAG):].decode("ascii")))
            except (UnicodeDecodeError, ValueError):
                return None
        at += 2 + length
    return None


def parse_status(payload: bytes) -> Tuple[Optional[str], Dict[str, str], Optional[str]]:
    """(state, problems, why not) of a device's retained status: `online`, `offline` (its last
    will), or {"state": ..., "problems": {part: reason}} for a device that works degraded."""
    if payload.strip() in (b"online", b"offline"):
        return payload.strip().decode("ascii"), {}, None
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, {}, "status is neither online, offline nor a JSON status"
    if not isinstance(data, dict) or data.get("state") not in ("online", "offline"):
        return None, {}, "status has no state online or offline"
    problems = data.get("problems", {})
    if not isinstance(problems, dict) or len(problems) > 20 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 40 and len(v) <= 500 for k, v in problems.items()):
        return None, {}, "status problems are not a small mapping of text"
    return data["state"], dict(problems), None



# An event's clip (README "Event clips"): JSON with the video base64-encoded in `data`, or no
# data and a reason when the device kept it (over its clip.max_send_bytes, at most 8 MB).
MAX_CLIP_BYTES = 8_000_000
MAX_CLIP_MESSAGE_BYTES = MAX_CLIP_BYTES * 4 // 3 + 65536
CLIP_CODECS = {"h264/mp4": "video/mp4", "vp8/webm": "video/webm"}


def parse_clip(raw: bytes) -> Tuple[Optional[dict], Optional[bytes], Optional[str]]:
    """(the clip's fields without data, the video, None) for a well-formed clip message, else
    (None, None, why). The video is None when the device kept it; when sent, it must be what its
    codec says (an MP4 or a WebM file by its first bytes)."""
    if len(raw) > MAX_CLIP_MESSAGE_BYTES:
        return None, None, f"a clip message of {len(raw)} bytes (at most {MAX_CLIP_MESSAGE_BYTES})"
    try:
        clip = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None, None, "not JSON"
    if not isinstance(clip, dict) or nesting_depth(clip) > 1:
        return None, None, "not a flat JSON object"
    try:
        for name in ("event_id", "clip_of"):
            clip[name] = str(uuid.UUID(str(clip.get(name))))
    except ValueError:
        return None, None, "event_id or clip_of is not a UUID"
    if clip.get("codec") not in CLIP_CODECS:
        return None, None, f"codec is not one of {', '.join(CLIP_CODECS)}"
    data = clip.pop("data", None)
    for name, value in clip.items():
        if isinstance(value, str) and len(value) > 2 * _MAX_TEXT:
            return None, None, f"{name} is longer than {2 * _MAX_TEXT} characters"
        if isinstance(value, float) and not math.isfinite(value):
            return None, None, f"{name} is not a finite number"
    if data is None:
        return clip, None, None
    if not isinstance(data, str):
        return None, None, "data is not base64 text"
    try:
        video = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None, None, "data is not base64"
    if len(video) > MAX_CLIP_BYTES:
        return None, None, f"a clip of {len(video)} bytes (at most {MAX_CLIP_BYTES})"
    is_mp4, is_webm = video[4:8] == b"ftyp", video[:4] == b"\x1a\x45\xdf\xa3"
    if not (is_mp4 if clip["codec"] == "h264/mp4" else is_webm):
        return None, None, f"data is not a {clip['codec']} file"
    return clip, video, None

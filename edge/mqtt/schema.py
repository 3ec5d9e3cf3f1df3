"""What a well-formed message on the broker looks like, checked field by field.

The control room reads messages from every device on the broker; one malformed or hostile
message must be skipped with a reason, never raise in the MQTT thread. Hand-written rather
than jsonschema: the current jsonschema needs a Rust extension and Python 3.8+, and this is
the whole schema.
"""


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
}
_REQUIRED = tuple(name for name, (_, nullable) in _EVENT_FIELDS.items() if not nullable)
_MAX_TEXT = 200


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


"""The topic layout, in one place: publisher and monitor both use it."""


from typing import Optional, Tuple

from edge.config.rules import valid_topic_level


def status_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/status"


def camera_status_topic(prefix: str, device: str, camera: str) -> str:
    return f"{prefix}/{device}/{camera}/status"


def events_topic(prefix: str, device: str, camera: str) -> str:
    return f"{prefix}/{device}/{camera}/events"


def snapshot_topic(prefix: str, device: str, camera: str) -> str:
    return f"{prefix}/{device}/{camera}/snapshot"


def clip_topic(prefix: str, device: str, camera: str) -> str:
    return f"{prefix}/{device}/{camera}/clip"


def instance_topic(prefix: str, device: str) -> str:
    """Where each running device says who it is (not retained): two with one name see each other."""
    return f"{prefix}/{device}/instance"


def health_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/health"


def command_topic(prefix: str, device: str, command: str) -> str:
    return f"{prefix}/{device}/cmd/{command}"


def parse_command(topic: str, prefix: str, device: str) -> Optional[str]:
    start = f"{prefix}/{device}/cmd/"
    return topic[len(start):] if topic.startswith(start) else None


def parse_device_topic(topic: str, prefix: str) -> Tuple[Optional[str], Optional[str], str]:
    """(device, camera or None, last part) of a topic under prefix."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != prefix:
        return None, None, ""
    if len(parts) == 3:
        return parts[1], None, parts[2]
    return parts[1], parts[2], parts[-1]


_TOPIC_KINDS = ("events", "health", "status", "snapshot", "clip")


def topic_kind(topic: str) -> str:
    """What a device topic carries, for counting (a fixed set of labels, whatever the topic
    holds: a hostile device's topic names must not grow the metrics): its last part, or "other"."""
    last = topic.rsplit("/", 1)[-1]
    return last if last in _TOPIC_KINDS else "other"


def valid_name(name: str) -> bool:
    """A device or camera name usable as one topic level (the config's rule)."""
    return valid_topic_level(name)

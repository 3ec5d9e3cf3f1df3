"""Rules that the config checks and the code that uses a value both need, stated once here:
the loader refuses a bad file with them, and the parts that take a value (topics, capture
readers, the buzzer's pin factory, the pose model) use the same names. The schema
(edge/config/schema.py) attaches them to its fields."""


import ipaddress
import re
from typing import List, Optional, Sequence, Tuple

from edge.errors import ConfigError
from edge.geometry import polygon_area, self_intersecting

# Capture readers: the GStreamer ones in the order `auto` tries them, then the others.
GST_READERS = ("appsink", "opencv-gst", "gst-launch")
CAPTURE_READERS = ("auto", "gst") + GST_READERS + ("opencv",)
PIN_FACTORIES = ("default", "jetson", "mock")  # gpiozero's own choice, Jetson.GPIO, tests
YOLO_LAYOUTS = ("auto", "yolov8", "yolov5")
BUILD_PRECISIONS = ("fp32", "fp16", "int8")


MAX_NAME_CHARS = 100  # device, camera and prefix names: topic levels, log lines and console columns


def valid_topic_level(name: str) -> bool:
    """A device, camera or prefix name usable as one MQTT topic level (a 65,536-byte device name
    once made every publish fail inside paho)."""
    return (bool(name) and len(name) <= MAX_NAME_CHARS and name == name.strip()
            and not any(ch in name for ch in "/+#\x00"))


def valid_host(host: str) -> bool:
    """A host name or address: not empty, no spaces, at most 253 characters (DNS's limit)."""
    return bool(host) and len(host) <= 253 and not any(ch.isspace() for ch in host)


def valid_input_size(size: int) -> bool:
    """A square model input the YOLO and pose models take: a multiple of 32, at least 64."""
    return size % 32 == 0 and size >= 64


def listen_address(text: str, default_host: str = "127.0.0.1") -> Optional[Tuple[str, int]]:
    """"HOST:PORT" or "PORT" of a web page -> (host, port); None when it is neither."""
    host, _, port = text.rpartition(":") if ":" in text else (default_host, "", text)
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


LISTEN_RULE = "must be HOST:PORT with a port from 1 to 65535, e.g. 127.0.0.1:8081"


def parse_listen(text: str) -> Tuple[str, int]:
    """listen_address() for a web page about to start: a one-line error when it is not one."""
    address = listen_address(text)
    if address is None:
        raise ConfigError(f"listen address {text!r} {LISTEN_RULE}")
    return address


def ha_slug(text: str) -> str:
    """A Home Assistant discovery topic level and object id: it takes [a-zA-Z0-9_-] only."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text)


def distinct_for_home_assistant(names: Sequence[str]) -> bool:
    """No two names become one id in Home Assistant ('ward 1', 'ward_1' and 'Ward_1' do)."""
    return len({ha_slug(name).lower() for name in names}) == len(names)


LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """A listen host only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() in LOOPBACK_NAMES


def one_of(names: Sequence[str]) -> str:
    """How an error lists the allowed names: "a, b or c"."""
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


ZONE_KINDS = ("bed", "danger", "watch")
MAX_ZONE_POINTS = 64


def polygon_points_ok(polygon: List[List[float]]) -> bool:
    """3 to MAX_ZONE_POINTS points of [x, y]."""
    return 3 <= len(polygon) <= MAX_ZONE_POINTS and all(len(point) == 2 for point in polygon)


def polygon_in_frame(polygon: List[List[float]]) -> bool:
    """Every coordinate a share of the frame, 0 to 1 (so a zone survives a change of resolution)."""
    return all(0.0 <= value <= 1.0 for point in polygon for value in point)


def polygon_simple(polygon: List[List[float]]) -> bool:
    """An area its edges do not cross: not a line, not a figure eight, no point given twice."""
    if not polygon_points_ok(polygon):
        return True  # reported by polygon_points_ok
    return polygon_area(polygon) > 1e-6 and not self_intersecting(polygon)

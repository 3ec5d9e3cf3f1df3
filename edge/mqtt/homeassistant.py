"""Home Assistant's MQTT discovery (README "Home Assistant"): one device per fall-edge device, and
per camera a `fall` binary sensor, a binary sensor per danger zone, a `people` sensor and an
`image` entity showing the latest snapshot. Configs and states are retained; availability is the
device's own status topic (with its last will), so Home Assistant shows the entities unavailable
when the device is gone. Entities of cameras or zones no longer configured are removed (an empty
retained config) when the device next connects."""


import json
import logging
import threading
import time
from typing import Dict, Sequence, Set, Tuple

from edge import __version__
from edge.config import Config
from edge.config.rules import ha_slug
from edge.mqtt import topics
from edge.mqtt.publisher import MqttPublisher
from edge.types import EventType, FallEvent

logger = logging.getLogger(__name__)

_PEOPLE_EVERY_S = 1.0  # the people count is sent when it changes, at most this often
# The status topic holds "online", "offline", or JSON {"state": "online", "problems": {...}}.
_AVAILABILITY_TEMPLATE = "{{ value_json.state if value.startswith('{') else value }}"


class HomeAssistantBridge:
    """Discovery configs at start, states from the device's events and frames."""

    def __init__(self, config: Config, publisher: MqttPublisher, cameras: Dict[str, Sequence]) -> None:
        self.prefix = config.homeassistant.discovery_prefix
        self.publisher = publisher
        self.device = publisher.device
        self.node = ha_slug(f"fall_edge_{self.device}")
        self.cameras = {camera: [z.name for z in zones if z.kind == "danger"] for camera, zones in cameras.items()}
        self._falls: Dict[str, Set[int]] = {camera: set() for camera in cameras}  # camera -> tracks down
        self._zones: Dict[Tuple[str, str], Set[int]] = {}  # (camera, zone) -> tracks inside
        self._people: Dict[str, int] = {}
        self._people_sent_at: Dict[str, float] = {}
        self._lock = threading.Lock()
        self._current: Dict[str, bytes] = {}  # discovery topic -> the config this device publishes there

    # -- topics ------------------------------------------------------------------------------------

    def _state_topic(self, camera: str, *what: str) -> str:
        return "/".join([self.publisher.prefix, self.device, camera, "ha", *what])

    def _config_topic(self, component: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{self.node}/{ha_slug(object_id)}/config"

    def _object_id(self, camera: str, *what: str) -> str:
        """What Home Assistant names the entity after: binary_sensor.fall_edge_<device>_<camera>_fall."""
        return ha_slug("_".join(["fall_edge", self.device, camera, *what])).lower()

    def configs(self) -> Dict[str, Dict[str, object]]:
        """Discovery topic -> config, for every entity of every camera."""
        device = {"identifiers": [f"fall-edge-{self.device}"], "name": f"fall-edge {self.device}",
                  "manufacturer": "fall-edge", "model": "fall detection appliance", "sw_version": __version__}
        availability = {"availability": [{"topic": topics.status_topic(self.publisher.prefix, self.device),
                                          "value_template": _AVAILABILITY_TEMPLATE}],
                        "payload_available": "online", "payload_not_available": "offline", "device": device}
        out: Dict[str, Dict[str, object]] = {}
        for camera, zones in self.cameras.items():
            unique = f"fall-edge-{self.device}-{camera}"
            out[self._config_topic("binary_sensor", f"{camera}_fall")] = {
                "name": f"{camera} fall", "unique_id": f"{unique}-fall", "object_id": self._object_id(camera, "fall"),
                "device_class": "safety",
                "state_topic": self._state_topic(camera, "fall"), "payload_on": "ON", "payload_off": "OFF",
                **availability}
            for zone in zones:
                out[self._config_topic("binary_sensor", f"{camera}_zone_{zone}")] = {
                    "name": f"{camera} {zone} danger zone", "unique_id": f"{unique}-zone-{zone}",
                    "object_id": self._object_id(camera, "zone", zone),
                    "device_class": "safety", "state_topic": self._state_topic(camera, "zone", zone),
                    "payload_on": "ON", "payload_off": "OFF", **availability}
            out[self._config_topic("sensor", f"{camera}_people")] = {
                "name": f"{camera} people in view", "unique_id": f"{unique}-people",
                "object_id": self._object_id(camera, "people"), "state_class": "measurement",
                "unit_of_measurement": "people", "icon": "mdi:account-group",
                "state_topic": self._state_topic(camera, "people"), **availability}
            out[self._config_topic("image", f"{camera}_snapshot")] = {
                "name": f"{camera} snapshot", "unique_id": f"{unique}-snapshot",
                "object_id": self._object_id(camera, "snapshot"), "content_type": "image/jpeg",
                "image_topic": topics.snapshot_topic(self.publisher.prefix, self.device, camera), **availability}
        return out

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Publish every config and an initial state (off, nobody), then clear stale configs."""
        configs = self.configs()
        self._current = {topic: json.dumps(body).encode("utf-8") for topic, body in configs.items()}
        for topic, encoded in self._current.items():
            self.publisher.publish_retained(topic, encoded)
        for camera, zones in self.cameras.items():
            self.publisher.publish_retained(self._state_topic(camera, "fall"), b"OFF")
            self.publisher.publish_retained(self._state_topic(camera, "people"), b"0")
            for zone in zones:
                self.publisher.publish_retained(self._state_topic(camera, "zone", zone), b"OFF")
        self.publisher.watch_retained(f"{self.prefix}/+/{self.node}/+/config", self._on_discovery)
        logger.info("Home Assistant discovery: %d entities under %s/.../%s", len(configs), self.prefix, self.node)

    def _on_discovery(self, topic: str, payload: bytes) -> None:
        """Any message on this device's discovery topics, retained or live: one of ours changed or
        removed by someone else is restored at once (a forged `payload_on: NEVER` once stayed until
        the device reconnected), and one that is not ours (an earlier run's, or forged) is removed."""
        if self.publisher.name_conflict:
            return  # two devices with one name would undo each other's configs forever: health says why
        ours = self._current.get(topic)
        if ours is not None:
            if payload != ours:
                logger.warning("Home Assistant discovery: %s was %s by another client; restored", topic,
                               "changed" if payload else "removed")
                self.publisher.publish_retained(topic, ours)
        elif payload:
            logger.info("Home Assistant discovery: removing %s (not configured on this device)", topic)
            self.publisher.publish_retained(topic, b"")

    # -- states ------------------------------------------------------------------------------------

    def on_event(self, event: FallEvent) -> None:
        camera = event.camera
        with self._lock:
            if event.type == EventType.FALL_DETECTED:
                self._set(self._falls.setdefault(camera, set()), event.track_id, True,
                          self._state_topic(camera, "fall"))
            elif event.type in (EventType.RECOVERED, EventType.ACKNOWLEDGED):
                self._set(self._falls.setdefault(camera, set()), event.track_id, False,
                          self._state_topic(camera, "fall"))
            elif event.type in (EventType.INTRUSION, EventType.INTRUSION_CLEARED) and event.zone:
                inside = self._zones.setdefault((camera, event.zone), set())
                self._set(inside, event.track_id, event.type == EventType.INTRUSION,
                          self._state_topic(camera, "zone", event.zone))

    def _set(self, members: Set[int], track_id: int, on: bool, topic: str) -> None:
        was = bool(members)
        if on:
            members.add(track_id)
        else:
            members.discard(track_id)
        if bool(members) != was:
            self.publisher.publish_retained(topic, b"ON" if members else b"OFF")

    def on_people(self, camera: str, count: int) -> None:
        now = time.monotonic()
        if self._people.get(camera) == count or now - self._people_sent_at.get(camera, -1e9) < _PEOPLE_EVERY_S:
            return
        self._people[camera], self._people_sent_at[camera] = count, now
        self.publisher.publish_retained(self._state_topic(camera, "people"), str(count).encode("ascii"))

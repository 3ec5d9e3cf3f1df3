"""Where events go: stdout, the local alarm, MQTT (through the outbox). Also the commands
from the control room (ack, test); the health report is health.py's, beside it."""


import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import cv2
import numpy as np

from edge.alarms.controller import LocalAlarm
from edge.clips.recorder import ClipService
from edge.config import Config
from edge.daemon.pipeline import iso_utc
from edge.mqtt.homeassistant import HomeAssistantBridge
from edge.mqtt.publisher import MqttPublisher
from edge.mqtt.schema import tag_snapshot
from edge.private import open_private, private_folder
from edge.types import EventType, FallEvent, FrameResult

logger = logging.getLogger(__name__)

_MAX_ACK_PAYLOAD = 1000  # a signed ack (edge/mqtt/commands.py) is about 250 bytes
_ACKABLE_EVENTS = 1000  # an ack for an older event is reported as unknown
_MAX_OPERATOR = 64  # characters of an operator's name kept in the acknowledged event


def mqtt_payload(event: FallEvent, device: str, snapshot: Optional[str]) -> Dict[str, object]:
    """The event as the control room receives it (seq is added by the outbox)."""
    return {
        "event_id": event.event_id,
        "type": event.type,
        "device": device,
        "camera": event.camera,
        "track_id": event.track_id,
        "started_at": event.started_at,
        "ts": event.wall_time,
        "stream_time_s": round(event.stream_time_s, 3),
        "confidence": round(event.confidence, 3),
        "torso_angle_deg": None if event.torso_angle_deg is None else round(event.torso_angle_deg, 1),
        "bbox": event.bbox,
        "keypoints": event.keypoints,
        "detector_label": event.detector_label,
        "snapshot": snapshot,
        **({"acknowledges": event.acknowledges, "operator": event.operator} if event.acknowledges else {}),
        **({"zone": event.zone} if event.zone is not None else {}),
        **({"seconds_to_enter": event.extra["seconds_to_enter"]} if "seconds_to_enter" in event.extra else {}),
    }


def save_snapshot(folder: Path, name: str, jpeg: bytes, keep: int, max_age_s: float) -> None:
    """Write one snapshot owner-only (whatever the umask: it shows a person on the floor), then
    delete the oldest beyond `keep` and any older than max_age_s."""
    private_folder(folder)
    if keep > 0:
        with open_private(folder / name, "wb") as handle:
            handle.write(jpeg)
    now = time.time()
    newest_first = sorted(((path.stat().st_mtime, path) for path in folder.glob("*.jpg")), reverse=True)
    for index, (modified, path) in enumerate(newest_first):
        if index >= keep or now - modified > max_age_s:
            try:
                path.unlink()
            except FileNotFoundError:  # (unlink's missing_ok is Python 3.8+; JetPack 4.6 has 3.6)
                pass


def snapshot_image(result: FrameResult, privacy: bool) -> np.ndarray:
    from edge.viz.draw import draw_result

    if not privacy:
        return draw_result(result)
    blank = FrameResult(frame=type(result.frame)(np.zeros_like(result.frame.image), result.frame.index,
                                                 result.frame.time_s),
                        tracks=result.tracks, events=result.events, detector_ran=result.detector_ran,
                        min_hits=result.min_hits, zones=result.zones)
    return draw_result(blank)


class EventRouter:
    def __init__(self, config: Config, publisher: Optional[MqttPublisher] = None,
                 alarm: Optional[LocalAlarm] = None, print_events: bool = True,
                 homeassistant: Optional[HomeAssistantBridge] = None) -> None:
        self.config = config
        self.publisher = publisher
        self.alarm = alarm
        self.print_events = print_events
        # Recent events, for acks by event_id; bounded, since the daemon runs for months.
        self._events_by_id: "OrderedDict[str, FallEvent]" = OrderedDict()
        self._route_lock = threading.RLock()  # re-entrant: an ack routes its `acknowledged`
        # Whether an event can still be acknowledged: "open", "acknowledged" or "recovered".
        self._ack_state: Dict[str, str] = {}
        self._open_events: Dict[Tuple[str, int], List[str]] = {}  # (camera, track) -> its open events
        self._ack_logged: Set[str] = set()  # event ids whose refused ack was logged (a flood logs once)
        self.events_sent = 0
        self.events_by_type: Dict[str, int] = {kind.value: 0 for kind in EventType}
        if publisher is not None:
            publisher.on_command("ack", self.on_ack)
            publisher.on_command("test", self.on_test)
        self.homeassistant = homeassistant
        self.clips: Optional[ClipService] = None
        if config.clip.enabled:
            self.clips = ClipService(config.clip, config.mqtt.snapshot_privacy,
                                     publisher.send_clip if publisher is not None else None, device=self.device)

    @property
    def device(self) -> str:
        return self.publisher.device if self.publisher is not None else ""

    def handle(self, result: FrameResult) -> None:
        if self.homeassistant is not None:
            seen = [t for t in result.tracks if t.hits >= result.min_hits and t.observed_this_frame]
            self.homeassistant.on_people(result.camera, len(seen))
        if self.clips is not None:
            self.clips.offer(result)  # before the events: the clip's first frames include this one
        for event in result.events:
            self._route(event, result)
            if self.clips is not None:
                self.clips.start(event)

    def _route(self, event: FallEvent, result: Optional[FrameResult]) -> None:
        # The frame loop routes detections while the MQTT thread routes acknowledgements.
        with self._route_lock:
            self._route_locked(event, result)

    def _route_locked(self, event: FallEvent, result: Optional[FrameResult]) -> None:
        self._events_by_id[event.event_id] = event
        while len(self._events_by_id) > _ACKABLE_EVENTS:
            old_id, _ = self._events_by_id.popitem(last=False)
            self._ack_state.pop(old_id, None)
            self._ack_logged.discard(old_id)
        chain = (event.camera, event.track_id)
        if event.type.opens_alarm:
            self._ack_state[event.event_id] = "open"
            self._open_events.setdefault(chain, []).append(event.event_id)
        elif event.type == EventType.RECOVERED:
            self._close_chain(chain, EventType.RECOVERED)
        if self.print_events:
            print(json.dumps(event.to_dict()), flush=True)
        if self.alarm is not None:
            self.alarm.handle(event)  # the site hears it first: no network in the way
        if self.publisher is not None:
            snapshot = None
            if result is not None and (event.type.opens_alarm or event.type == EventType.INTRUSION):
                snapshot = self._store_snapshot(event, result)
            self.publisher.send_event(event.camera, mqtt_payload(event, self.device, snapshot))
        if self.homeassistant is not None:
            self.homeassistant.on_event(event)
        self.events_sent += 1
        self.events_by_type[event.type.value] += 1

    def _store_snapshot(self, event: FallEvent, result: FrameResult) -> Optional[str]:
        assert self.publisher is not None
        ok, jpeg = cv2.imencode(".jpg", snapshot_image(result, self.config.mqtt.snapshot_privacy),
                                [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return None
        name = f"{event.event_id}.jpg"
        try:
            save_snapshot(Path(self.config.mqtt.snapshot_dir), name, jpeg.tobytes(), self.config.mqtt.snapshot_keep,
                          self.config.mqtt.snapshot_max_age_days * 86400.0)
        except OSError as exc:
            logger.warning("snapshot %s not saved (%s); it is still published", name, exc)
        # The picture names its event (a JPEG comment), so the console pairs them exactly.
        self.publisher.send_snapshot(event.camera, tag_snapshot(jpeg.tobytes(), event.event_id))
        return name

    # -- commands from the control room ---------------------------------------------------------

    def on_ack(self, payload: bytes) -> None:
        request = self._ack_request(payload)
        if request is None:
            return
        with self._route_lock:  # one ack at a time against the frame loop's events
            self._ack(*request)

    def _ack(self, event_id: str, operator: Optional[str]) -> None:
        event = self._events_by_id.get(event_id)
        state = self._ack_state.get(event_id)
        if event is None or state != "open":
            # Acknowledging is idempotent: one `acknowledged` per fall, however many acks arrive.
            if event is None:
                why = "unknown event"
            else:
                why = {"acknowledged": "already acknowledged",
                       "recovered": "the person got up (event closed)"}.get(state or "", "not a fall or alarm")
            if event_id not in self._ack_logged:
                if len(self._ack_logged) >= _ACKABLE_EVENTS:  # random ids must not grow it forever
                    self._ack_logged.clear()
                self._ack_logged.add(event_id)
                logger.warning("ack for event %s ignored: %s", event_id, why)
            return
        self._close_chain((event.camera, event.track_id), EventType.ACKNOWLEDGED)
        if self.alarm is not None:
            self.alarm.acknowledge(event_id)
        now = datetime.now(timezone.utc)
        acknowledged = FallEvent(
            event_id=str(uuid.uuid4()), type=EventType.ACKNOWLEDGED, camera=event.camera, track_id=event.track_id,
            stream_time_s=event.stream_time_s, wall_time=iso_utc(now), confidence=event.confidence,
            torso_angle_deg=event.torso_angle_deg, bbox=event.bbox, fall_started_s=event.fall_started_s,
            started_at=event.started_at, detector_label=event.detector_label, acknowledges=event_id,
            operator=operator)
        logger.info("event %s acknowledged by the control room%s", event_id, f" ({operator})" if operator else "")
        self._route(acknowledged, None)

    def _close_chain(self, chain: Tuple[str, int], state: str) -> None:
        for event_id in self._open_events.pop(chain, []):
            if event_id in self._ack_state:
                self._ack_state[event_id] = state

    @staticmethod
    def _ack_request(payload: bytes) -> Optional[Tuple[str, Optional[str]]]:
        """(event id, operator or None) of an ack: the event id, plain, or JSON {"event_id": ...,
        "operator": ...} (what a signed command carries)."""
        try:
            text = payload[:_MAX_ACK_PAYLOAD].decode("utf-8").strip()
            operator = None
            if text.startswith("{"):
                data = json.loads(text)
                text = str(data.get("event_id", ""))
                named = data.get("operator")
                if isinstance(named, str) and named.strip():
                    operator = "".join(ch for ch in named.strip() if ch.isprintable())[:_MAX_OPERATOR]
            return str(uuid.UUID(text)), operator
        except (UnicodeDecodeError, ValueError, AttributeError, json.JSONDecodeError):
            logger.warning("malformed ack payload %r ignored: send the event_id", payload[:80])
            return None

    def close(self) -> None:
        if self.clips is not None:
            self.clips.close()  # clips still open are written and handed to the outbox first
        if self.publisher is not None:
            self.publisher.stop()
            self.publisher.outbox.close()
        if self.alarm is not None:
            self.alarm.close()

    def on_test(self, payload: bytes) -> None:
        if self.alarm is not None:
            self.alarm.test()
        else:
            logger.info("alarm test requested, but no buzzer or speech is configured")

    # -- camera status ---------------------------------------------------------------------

    def camera_status(self, camera: str, status: str, reason: str) -> None:
        """From a capture thread: a camera went offline or came back."""
        logger.info("camera %s %s (%s)", camera, status, reason)
        if self.publisher is not None:
            self.publisher.send_camera_status(camera, {"camera": camera, "status": status, "reason": reason,
                                                       "ts": iso_utc(datetime.now(timezone.utc))})

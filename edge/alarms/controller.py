"""What the site hears: events start and stop the buzzer and the spoken warning."""

from __future__ import annotations

import logging
from typing import Dict, Optional, Tuple

from edge.alarms.buzzer import Buzzer
from edge.alarms.speech import Speaker
from edge.types import FallEvent

logger = logging.getLogger(__name__)

ChainKey = Tuple[str, int]  # (camera, track id): one fall's chain of events


class LocalAlarm:
    def __init__(self, buzzer: Optional[Buzzer], speaker: Optional[Speaker]) -> None:
        self.buzzer = buzzer
        self.speaker = speaker
        self._active: Dict[ChainKey, str] = {}  # chain -> fall_detected | alarm
        self._chain_of_event: Dict[str, ChainKey] = {}

    def handle(self, event: FallEvent) -> None:
        key = (event.camera, event.track_id)
        if event.type in ("fall_detected", "alarm"):
            self._chain_of_event[event.event_id] = key
            self._active[key] = event.type
            if self.buzzer is not None:
                self.buzzer.sound(event.type)
            if self.speaker is not None:
                self.speaker.start(self._speech_key(key), event.type)
        elif event.type == "recovered":
            self._silence(key)

    def acknowledge(self, event_id: str) -> Optional[ChainKey]:
        """Silence the chain an event belongs to; None when the event id is unknown here."""
        key = self._chain_of_event.get(event_id)
        if key is None:
            return None
        self._silence(key)
        return key

    def test(self) -> None:
        logger.info("alarm test requested")
        if self.buzzer is not None:
            self.buzzer.sound("fall_detected")
        if self.speaker is not None:
            self.speaker.say("test")

    def _silence(self, key: ChainKey) -> None:
        self._active.pop(key, None)
        # Forget the chain's event ids: a later ack for them has nothing left to silence.
        self._chain_of_event = {eid: chain for eid, chain in self._chain_of_event.items() if chain != key}
        if self.speaker is not None:
            self.speaker.stop(self._speech_key(key))
        if self.buzzer is not None:
            if not self._active:
                self.buzzer.stop()
            else:  # another fall still stands: keep sounding its pattern
                self.buzzer.sound("alarm" if "alarm" in self._active.values() else "fall_detected")

    @staticmethod
    def _speech_key(key: ChainKey) -> str:
        return f"{key[0]}#{key[1]}"

    def close(self) -> None:
        if self.buzzer is not None:
            self.buzzer.close()
        if self.speaker is not None:
            self.speaker.close()

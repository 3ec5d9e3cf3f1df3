"""What the site hears: events start and stop the buzzer and the spoken warning."""


import logging
import threading
import time
from typing import Dict, Optional, Tuple, Union

from edge.alarms.buzzer import Buzzer, ResilientBuzzer
from edge.alarms.speech import Speaker
from edge.logs import LogThrottle
from edge.types import AcknowledgedChains, EventType, FallEvent

logger = logging.getLogger(__name__)

TEST_INTERVAL_S = 30.0  # one alarm test at most this often; more requests are dropped
TEST_BUZZ_S = 2.0  # a test beeps this long
_MAX_ACKNOWLEDGED = 1000

ChainKey = Tuple[str, int]  # (camera, track id): one fall's chain of events


class LocalAlarm:
    def __init__(self, buzzer: Optional[Union[Buzzer, ResilientBuzzer]], speaker: Optional[Speaker]) -> None:
        self.buzzer = buzzer
        self.speaker = speaker
        self._active: Dict[ChainKey, str] = {}  # chain -> fall_detected | alarm
        self._chain_of_event: Dict[str, ChainKey] = {}
        self._acknowledged = AcknowledgedChains(_MAX_ACKNOWLEDGED)  # their later `alarm` stays quiet
        self._last_test_s: Optional[float] = None
        self._test_timer: Optional[threading.Timer] = None
        self._tests_refused = 0
        self._refusal_log = LogThrottle(TEST_INTERVAL_S)

    def handle(self, event: FallEvent) -> None:
        key = (event.camera, event.track_id)
        if self._acknowledged.repeat_of(event.type, key) is not None:
            # The same fall, still down after the hold: the operator already knows and is on it.
            logger.info("alarm for %s track %d stays quiet: already acknowledged", *key)
            return
        if event.type.opens_alarm:
            self._chain_of_event[event.event_id] = key
            self._active[key] = event.type
            if self.buzzer is not None:
                self.buzzer.sound(event.type)
            if self.speaker is not None:
                self.speaker.start(self._speech_key(key), event.type)
        elif event.type == EventType.RECOVERED:
            self._silence(key)
        elif event.type.is_zone_warning:
            self._zone_warning(event.type)

    def _zone_warning(self, kind: EventType) -> None:
        """A danger zone's warning: chirps for buzzer.zone_warning_s (unless a fall's pattern is
        sounding: that one matters more and stays) and its sentence, once."""
        if self.buzzer is not None and not self._active:
            self.buzzer.sound(kind)
            self._start_short_buzz(self.buzzer.config.zone_warning_s)
        if self.speaker is not None:
            self.speaker.say(kind.value)

    def acknowledge(self, event_id: str) -> Optional[ChainKey]:
        """Silence the chain an event belongs to; None when the event id is unknown here."""
        key = self._chain_of_event.get(event_id)
        if key is None:
            return None
        self._silence(key)
        self._acknowledged.acknowledged(key)
        return key

    def test(self) -> bool:
        """A short test of the buzzer and the spoken warning. Never while a real fall is sounding,
        and at most once per TEST_INTERVAL_S (requests in between are dropped, not queued): a
        flood of test commands must not delay or replace a real warning. True when it ran."""
        now = time.monotonic()
        if self._active:
            self._log_test_refusal("a real fall is being announced")
            return False
        if self._last_test_s is not None and now - self._last_test_s < TEST_INTERVAL_S:
            self._log_test_refusal(f"one ran less than {TEST_INTERVAL_S:.0f} s ago")
            return False
        self._last_test_s = now
        logger.info("alarm test")
        if self.buzzer is not None:
            self.buzzer.sound(EventType.FALL_DETECTED)
            self._start_short_buzz(TEST_BUZZ_S)
        if self.speaker is not None:
            self.speaker.say("test")
        return True

    def _start_short_buzz(self, seconds: float) -> None:
        """A test's or a zone warning's beeps end by themselves (a fall's wait for its recovery)."""
        if self._test_timer is not None:
            self._test_timer.cancel()
        self._test_timer = threading.Timer(seconds, self._end_short_buzz)
        self._test_timer.daemon = True
        self._test_timer.start()

    def _end_short_buzz(self) -> None:
        if not self._active and self.buzzer is not None:  # a real fall since keeps its buzzer
            self.buzzer.stop()

    def _log_test_refusal(self, reason: str) -> None:
        self._tests_refused += 1
        if self._refusal_log.allow():
            logger.warning("alarm test ignored: %s (%d ignored so far)", reason, self._tests_refused)

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
                self.buzzer.sound(EventType.ALARM if EventType.ALARM in self._active.values()
                                  else EventType.FALL_DETECTED)

    def problems(self) -> Dict[str, str]:
        """What of the local alarm does not work now (for health): buzzer and speech."""
        out = {}
        if self.buzzer is not None and getattr(self.buzzer, "error", None):
            out["buzzer"] = str(self.buzzer.error)
        if self.speaker is not None and self.speaker.problem:
            out["speech"] = self.speaker.problem
        return out

    @staticmethod
    def _speech_key(key: ChainKey) -> str:
        return f"{key[0]}#{key[1]}"

    def close(self) -> None:
        if self._test_timer is not None:
            self._test_timer.cancel()
        if self.buzzer is not None:
            self.buzzer.close()
        if self.speaker is not None:
            self.speaker.close()

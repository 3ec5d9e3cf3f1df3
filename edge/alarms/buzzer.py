"""The site buzzer through gpiozero: a pattern per event type, auto-stop, stop on ack."""


import logging
import threading
import time
import warnings
from typing import Optional

from edge.config import BuzzerConfig
from edge.config.rules import PIN_FACTORIES, one_of
from edge.errors import ConfigError

logger = logging.getLogger(__name__)


def make_pin_factory(name: str):
    """default: gpiozero's own choice (Raspberry Pi); jetson: Jetson.GPIO; mock: for tests."""
    if name == "default":
        return None
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    if name == "jetson":
        try:
            from edge.alarms.jetson_pins import JetsonFactory

            return JetsonFactory()
        except ImportError:
            raise ConfigError("buzzer.pin_factory is jetson but Jetson.GPIO is not installed: "
                              "pip install Jetson.GPIO (it ships with JetPack)") from None
    raise ConfigError(f"buzzer.pin_factory '{name}' is unknown: use {one_of(PIN_FACTORIES)}")


class Buzzer:
    def __init__(self, config: BuzzerConfig, pin_factory=None) -> None:
        from gpiozero import Buzzer as GpioBuzzer
        from gpiozero.exc import GPIOZeroError

        self.config = config
        factory = pin_factory if pin_factory is not None else make_pin_factory(config.pin_factory)
        try:
            self._device = GpioBuzzer(config.pin, active_high=config.active_high, initial_value=False,
                                      pin_factory=factory)
        except (GPIOZeroError, OSError) as exc:
            raise ConfigError(f"buzzer on pin {config.pin} cannot be opened ({exc}): check buzzer.pin, "
                              f"buzzer.pin_factory and that this user may use GPIO") from None
        self._timer: Optional[threading.Timer] = None
        self._lock = threading.Lock()
        self.pattern: Optional[str] = None

    def sound(self, kind: str) -> None:
        """Start the pattern for `fall_detected`, `alarm` or a danger zone's `intrusion` and
        `approaching`; stops by itself after auto_stop_s."""
        patterns = {"alarm": self.config.alarm_pattern_s, "intrusion": self.config.zone_pattern_s,
                    "approaching": self.config.zone_pattern_s}
        on_s, off_s = patterns.get(kind, self.config.fall_pattern_s)[:2]
        with self._lock:
            self._device.beep(on_time=on_s, off_time=off_s, background=True)
            self.pattern = kind
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.config.auto_stop_s, self.stop)
            self._timer.daemon = True
            self._timer.start()
        logger.info("buzzer: %s pattern on pin %s", kind, self.config.pin)

    def stop(self) -> None:
        with self._lock:
            if self._device.closed:  # a timer (auto stop, a test's beep) that fired after close()
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._device.off()
            self.pattern = None

    @property
    def is_sounding(self) -> bool:
        return self.pattern is not None

    def close(self) -> None:
        self.stop()
        self._device.close()


RETRY_S = 60.0  # how often a buzzer that could not be opened is tried again


class ResilientBuzzer:
    """The buzzer as the daemon uses it: a GPIO line that cannot be opened (no permission, in
    use, no GPIO driver, Jetson.GPIO missing) is logged once and reported (`error`), tried again
    every RETRY_S when an alarm wants it, and never stops detection or the spoken warning."""

    def __init__(self, config: BuzzerConfig, pin_factory=None) -> None:
        self.config = config
        self._pin_factory = pin_factory
        self._buzzer: Optional[Buzzer] = None
        self.error: Optional[str] = None
        self._next_try = 0.0
        self._open()

    def _open(self) -> Optional[Buzzer]:
        if self._buzzer is not None:
            return self._buzzer
        now = time.monotonic()
        if now < self._next_try:
            return None
        self._next_try = now + RETRY_S
        try:
            with warnings.catch_warnings():  # gpiozero warns for every pin library it tries
                warnings.simplefilter("ignore")
                factory = self._pin_factory if self._pin_factory is not None else make_pin_factory(
                    self.config.pin_factory)
                self._buzzer = Buzzer(self.config, pin_factory=factory)
        except ConfigError as exc:
            if str(exc) != self.error:
                logger.error("%s; the alarm goes on without the buzzer (spoken warning and MQTT), trying again "
                             "every %.0f s", exc, RETRY_S)
            self.error = str(exc)
            return None
        if self.error is not None:
            logger.warning("buzzer on pin %s opened after all", self.config.pin)
        self.error = None
        return self._buzzer

    def sound(self, kind: str) -> None:
        buzzer = self._open()
        if buzzer is not None:
            buzzer.sound(kind)

    def stop(self) -> None:
        if self._buzzer is not None:
            self._buzzer.stop()

    @property
    def is_sounding(self) -> bool:
        return self._buzzer is not None and self._buzzer.is_sounding

    @property
    def pattern(self) -> Optional[str]:
        return self._buzzer.pattern if self._buzzer is not None else None

    def close(self) -> None:
        if self._buzzer is not None:
            self._buzzer.close()

"""A gpiozero pin factory on NVIDIA's Jetson.GPIO.

gpiozero's own factories do not know Jetson boards ("Unable to load any default pin
factory"). The Jetson 40-pin header follows the Raspberry Pi layout and Jetson.GPIO's BCM
mode uses the Pi's BCM numbers, so the Pi's board description serves for pin names and
this factory only replaces the pin driver. Output and input only: no PWM, no edges.

Written for gpiozero 2.x (Python 3.8+) and 1.6 (what JetPack 4.6's Python 3.6 gets): their
PiPin takes (factory, pin info) and (factory, number) respectively, which are passed through
untouched, and both keep the BCM number in `_number` and name the pin in repr().
"""


import logging
import time
import warnings

from gpiozero.exc import PinInvalidFunction, PinSetInput
from gpiozero.pins.pi import PiFactory, PiPin

# A 40-pin Raspberry Pi 4B: same header as the Jetson Nano/Xavier NX/Orin developer kits.
_PI_HEADER_REVISION = 0xC03111


logger = logging.getLogger(__name__)


def _setup(gpio, number: int, direction) -> None:
    """GPIO.setup with Jetson.GPIO's warnings heard, not silenced. "Already in use" (a pin left
    set up by an earlier run that died) is harmless and logged; any other warning, such as a pin
    the pinmux leaves in another function (Orin's header pins by default), means the pin will not
    drive the buzzer: that is an error, so the doctor and the health report say so."""
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        gpio.setup(number, direction)
    for warning in heard:
        message = str(warning.message)
        if "already in use" in message:
            logger.info("GPIO%d: %s", number, message)
            continue
        raise PinInvalidFunction(f"GPIO{number} (BCM): Jetson.GPIO warns '{message}': the pin may not drive the "
                                 f"buzzer; make it a GPIO with sudo /opt/nvidia/jetson-io/jetson-io.py, or use "
                                 f"another pin (buzzer.pin)")


def _gpio():
    import Jetson.GPIO as GPIO  # imported late: only on a Jetson

    return GPIO


class JetsonPin(PiPin):
    def __init__(self, factory: "JetsonFactory", info) -> None:
        super().__init__(factory, info)
        self._function = "input"
        self._gpio = _gpio()
        _setup(self._gpio, self._number, self._gpio.IN)

    def close(self) -> None:
        self._gpio.cleanup(self._number)

    def _get_function(self) -> str:
        return self._function

    def _set_function(self, value: str) -> None:
        if value not in ("input", "output"):
            raise PinInvalidFunction(f"pin {self!r} on a Jetson supports input and output only")
        _setup(self._gpio, self._number, self._gpio.OUT if value == "output" else self._gpio.IN)
        self._function = value

    def _get_state(self) -> bool:
        return bool(self._gpio.input(self._number))

    def _set_state(self, value: bool) -> None:
        if self._function != "output":
            raise PinSetInput(f"cannot set the state of input pin {self!r}")
        self._gpio.output(self._number, self._gpio.HIGH if value else self._gpio.LOW)

    def _get_pull(self) -> str:
        return "floating"

    def _set_pull(self, value: str) -> None:
        if value != "floating":
            raise PinInvalidFunction("Jetson.GPIO sets no pull resistors: use an external one")


class JetsonFactory(PiFactory):
    def __init__(self) -> None:
        super().__init__()
        gpio = _gpio()
        gpio.setwarnings(True)  # heard by _setup: a pinmux warning is why a buzzer stays silent
        gpio.setmode(gpio.BCM)
        self.pin_class = JetsonPin

    def _get_revision(self) -> int:
        return _PI_HEADER_REVISION

    def ticks(self) -> float:
        return time.monotonic()

    def ticks_diff(self, later: float, earlier: float) -> float:
        return later - earlier

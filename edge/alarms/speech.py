"""Spoken warnings with espeak-ng: one worker, never overlapping, repeated while an alarm stands.

Each message is synthesised to a WAV file and played with aplay on the configured ALSA
device. Where there is no espeak-ng or no sound device, that is logged once and the
daemon goes on: the buzzer and MQTT still work.
"""


import heapq
import itertools
import logging
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Deque, Dict, List, Optional, Tuple

from edge.config import SpeechConfig

logger = logging.getLogger(__name__)

_SYNTH_TIMEOUT_S = 30.0
_COALESCED = ("test", "intrusion", "approaching")
_PLAY_TIMEOUT_S = 120.0


def synth_command(text: str, voice: str, target: Path, config: SpeechConfig) -> List[str]:
    return [config.command, "-v", voice, "-s", str(config.words_per_minute), "-w", str(target), text]


def synthesize(text: str, voice: str, target: Path, config: SpeechConfig) -> None:
    """Write `text` spoken in `voice` to a WAV file; raises OSError/CalledProcessError on failure."""
    subprocess.run(synth_command(text, voice, target, config), check=True, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, timeout=_SYNTH_TIMEOUT_S)


@dataclass(order=True)
class _Announcement:
    priority: int  # 0: a real fall or alarm, a danger zone's warning; 1: a test
    order: int
    key: str = field(compare=False)  # the chain it belongs to ("test" for tests)
    kind: str = field(compare=False)
    batch: List[Tuple[str, str]] = field(compare=False)


def aplay_command(config: SpeechConfig, wav: Path) -> List[str]:
    """Play a WAV file on speech.alsa_device (the default device when empty)."""
    return ["aplay", "-q"] + (["-D", config.alsa_device] if config.alsa_device else []) + [str(wav)]


class Speaker:
    """One worker speaks the queued announcements, real alarms before tests.

    A test is coalesced (one waits at most), never queued ahead of a real warning, and cut
    short when a real one arrives; stop(key) drops only that chain's announcements."""

    def __init__(self, config: SpeechConfig) -> None:
        self.config = config
        self._pending: List[_Announcement] = []  # a heap
        self._order = itertools.count()
        self._repeating: Dict[str, Tuple[str, float]] = {}  # key -> (kind, next time)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        # (kind, the child speaking): espeak-ng while it synthesises, then aplay while it plays.
        # Both can be cut: a real warning cuts a test, an acknowledgement cuts its own chain.
        self._playing: Optional[Tuple[str, subprocess.Popen]] = None
        self._speaking_key: Optional[str] = None  # the chain whose announcement is being spoken
        self._silenced = False  # stop() for that chain came mid-announcement: the rest is not spoken
        self._warned: set = set()
        self.problem: Optional[str] = None  # why speech does not work now (health)
        self.spoken = 0  # messages played (or synthesised, where there is no sound device)
        self.announced: Deque[str] = deque(maxlen=100)  # kinds, in the order they were begun
        self._closed = False
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="speech", daemon=True)
        self._ticker = threading.Thread(target=self._tick, name="speech-repeat", daemon=True)
        self._worker.start()
        self._ticker.start()

    def messages(self, kind: str) -> List[Tuple[str, str]]:
        """(voice, text) pairs for an event kind: the first language, then the second."""
        cfg = self.config
        first = {"fall_detected": cfg.fall_text, "alarm": cfg.alarm_text, "test": cfg.test_text,
                 "intrusion": cfg.intrusion_text, "approaching": cfg.approaching_text}[kind]
        second = {"fall_detected": cfg.second_fall_text, "alarm": cfg.second_alarm_text,
                  "test": cfg.second_test_text, "intrusion": cfg.second_intrusion_text,
                  "approaching": cfg.second_approaching_text}[kind]
        out = [(cfg.voice, first)]
        if cfg.second_voice and second:
            out.append((cfg.second_voice, second))
        return out

    def say(self, kind: str, key: Optional[str] = None) -> bool:
        """Queue one announcement; returns at once. False when it was coalesced away: a test or a
        danger zone's warning while one of its kind is still waiting (many people walking into a
        zone together hear it once, not once each)."""
        test = kind == "test"
        with self._lock:
            if kind in _COALESCED and any(item.kind == kind for item in self._pending):
                return False  # one waiting is enough
            heapq.heappush(self._pending, _Announcement(1 if test else 0, next(self._order),
                                                        key or ("test" if test else kind), kind,
                                                        self.messages(kind)))
            playing = self._playing
            self._wake.notify()
        if not test and playing is not None and playing[0] == "test":
            playing[1].terminate()  # a real warning does not wait for the end of a test
        return True

    def start(self, key: str, kind: str) -> None:
        """Speak now, and again every repeat_interval_s until stop(key)."""
        with self._lock:
            self._repeating[key] = (kind, time.monotonic() + self.config.repeat_interval_s)
            # the newer message of a chain (alarm after fall_detected) supersedes one not yet spoken
            self._pending = [item for item in self._pending if item.key != key]
            heapq.heapify(self._pending)
        self.say(kind, key)

    def stop(self, key: Optional[str] = None) -> None:
        """Stop repeating for key (None: for all), drop its announcements not yet spoken, and cut
        the one being spoken: an operator's ack silences the site at once, not after two languages."""
        with self._lock:
            if key is None:
                self._repeating.clear()
                self._pending = []
            else:
                self._repeating.pop(key, None)
                self._pending = [item for item in self._pending if item.key != key]
                heapq.heapify(self._pending)
            playing = None
            if self._speaking_key is not None and (key is None or key == self._speaking_key):
                self._silenced = True
                playing = self._playing
        if playing is not None:
            playing[1].terminate()

    @property
    def active(self) -> bool:
        with self._lock:
            return bool(self._repeating)

    def close(self) -> None:
        self._stop.set()
        self.stop()
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._worker.join(timeout=2.0)

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            due = []
            with self._lock:
                for key, (kind, next_time) in list(self._repeating.items()):
                    if now >= next_time:
                        due.append((key, kind))
                        self._repeating[key] = (kind, now + self.config.repeat_interval_s)
            for key, kind in due:
                self.say(kind, key)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        self.problem = message % args  # the latest, for health; logged once per kind
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    def _next(self) -> Optional[_Announcement]:
        with self._lock:
            while not self._pending and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            return heapq.heappop(self._pending)

    def _run(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            self.announced.append(item.kind)
            with self._lock:
                self._speaking_key, self._silenced = item.key, False
            for voice, text in item.batch:
                if item.kind == "test" and self._real_waiting():
                    break  # the rest of a test gives way to a real warning
                with self._lock:
                    if self._silenced:
                        break  # acknowledged or recovered mid-announcement
                try:
                    self._speak(voice, text, item.kind)
                except Exception as exc:  # noqa: BLE001 - the worker must outlive any one sentence
                    # A worker that died here left every later warning unspoken while health said
                    # speech was fine (issue 39, defect 1): report it and take the next one.
                    self._warn_once(f"worker-{type(exc).__name__}", "speech: a warning could not be spoken (%s)", exc)
            with self._lock:
                self._speaking_key = None

    def _real_waiting(self) -> bool:
        with self._lock:
            return self._real_pending()

    def _real_pending(self) -> bool:
        """A real warning is queued (the caller holds the lock)."""
        return any(item.priority == 0 for item in self._pending)

    def _speak(self, voice: str, text: str, kind: str) -> None:
        if shutil.which(self.config.command) is None:
            self._warn_once("engine", "speech: %s not found (apt-get install espeak-ng): spoken warnings are off",
                            self.config.command)
            return
        try:
            workspace = tempfile.TemporaryDirectory(prefix="fall-edge-speech-")
        except OSError as exc:
            # Under a sandbox that leaves /tmp, /var/tmp and the working directory read-only
            # (ProtectSystem=strict without PrivateTmp) tempfile finds nowhere to write.
            self._warn_once("tmpdir", "speech: no writable temporary directory (%s): spoken warnings are off; "
                                      "set TMPDIR to a writable directory (the unit's RuntimeDirectory)", exc)
            return
        with workspace as tmp:
            wav = Path(tmp) / "message.wav"
            # Synthesis takes seconds on a Nano: a test being synthesised when a fall comes is cut
            # there too (it delayed the first real sentence by 2.6 s).
            try:
                outcome = self._child(synth_command(text, voice, wav, self.config), kind, _SYNTH_TIMEOUT_S)
            except (OSError, subprocess.SubprocessError) as exc:
                failure: Optional[str] = str(exc)
            else:
                if outcome is None or self._was_cut(outcome[0], kind):
                    return
                returncode, stderr = outcome
                failure = None if returncode == 0 else (stderr.strip().splitlines()
                                                        or [f"exit status {returncode}"])[-1]
            if failure is not None:
                self._warn_once(f"synth-{voice}", "speech: %s failed for voice %s (%s)", self.config.command,
                                voice, failure)
                return
            self._play(wav, kind)

    def _child(self, command: List[str], kind: str, timeout_s: float) -> Optional[Tuple[int, str]]:
        """Run one speech process where stop() and a real warning can cut it: (exit status,
        stderr), or None when it was not started (silenced, or a test with a real warning
        waiting). Raises OSError when it cannot start, TimeoutExpired (after killing it) when it hangs."""
        with self._lock:
            if self._silenced or (kind == "test" and self._real_pending()):
                return None
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       universal_newlines=True)
            self._playing = (kind, process)
        try:
            _, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise
        finally:
            with self._lock:
                self._playing = None
        return process.returncode, stderr or ""

    def _was_cut(self, returncode: int, kind: str) -> bool:
        """Ended by our own SIGTERM: a test giving way to a real warning, or an acknowledgement."""
        with self._lock:
            return returncode == -signal.SIGTERM and (kind == "test" or self._silenced)

    def _play(self, wav: Path, kind: str) -> None:
        if shutil.which("aplay") is None:
            self._warn_once("aplay", "speech: aplay not found (apt-get install alsa-utils): spoken warnings "
                                     "are synthesised but not played")
            self.spoken += 1
            return
        try:
            outcome = self._child(aplay_command(self.config, wav), kind, _PLAY_TIMEOUT_S)
        except OSError as exc:
            self._warn_once("play", "speech: aplay could not start (%s)", exc)
            return
        except subprocess.TimeoutExpired:
            self._warn_once("play-timeout", "speech: aplay hung; check the sound device")
            return
        if outcome is None or self._was_cut(outcome[0], kind):
            return
        returncode, stderr = outcome
        if returncode != 0:
            reason = (stderr.strip().splitlines() or ["no output"])[-1]
            self._warn_once("play", "speech: no sound device (%s): spoken warnings are off until one appears; "
                                    "set speech.alsa_device", reason)
            return
        self.spoken += 1
        self.problem = None

"""Spoken warnings with espeak-ng: one worker, never overlapping, repeated while an alarm stands.

Each message is synthesised to a WAV file and played with aplay on the configured ALSA
device. Where there is no espeak-ng or no sound device, that is logged once and the
daemon goes on: the buzzer and MQTT still work.
"""

from __future__ import annotations

import logging
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edge.config import SpeechConfig

logger = logging.getLogger(__name__)

_SYNTH_TIMEOUT_S = 30.0
_PLAY_TIMEOUT_S = 120.0


def synthesize(text: str, voice: str, target: Path, config: SpeechConfig) -> None:
    """Write `text` spoken in `voice` to a WAV file; raises OSError/CalledProcessError on failure."""
    subprocess.run([config.command, "-v", voice, "-s", str(config.words_per_minute), "-w", str(target), text],
                   check=True, capture_output=True, timeout=_SYNTH_TIMEOUT_S)


class Speaker:
    def __init__(self, config: SpeechConfig) -> None:
        self.config = config
        self._queue: queue.Queue = queue.Queue()  # batches of (voice, text); None stops the worker
        self._repeating: Dict[str, Tuple[str, float]] = {}  # key -> (kind, next time)
        self._lock = threading.Lock()
        self._warned: set = set()
        self.spoken = 0  # messages played (or synthesised, where there is no sound device)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="speech", daemon=True)
        self._ticker = threading.Thread(target=self._tick, name="speech-repeat", daemon=True)
        self._worker.start()
        self._ticker.start()

    def messages(self, kind: str) -> List[Tuple[str, str]]:
        """(voice, text) pairs for an event kind: the first language, then the second."""
        cfg = self.config
        first = {"fall_detected": cfg.fall_text, "alarm": cfg.alarm_text, "test": cfg.test_text}[kind]
        second = {"fall_detected": cfg.second_fall_text, "alarm": cfg.second_alarm_text,
                  "test": cfg.second_test_text}[kind]
        out = [(cfg.voice, first)]
        if cfg.second_voice and second:
            out.append((cfg.second_voice, second))
        return out

    def say(self, kind: str) -> None:
        """Queue one announcement; returns at once."""
        self._queue.put(self.messages(kind))

    def start(self, key: str, kind: str) -> None:
        """Speak now, and again every repeat_interval_s until stop(key)."""
        with self._lock:
            self._repeating[key] = (kind, time.monotonic() + self.config.repeat_interval_s)
        self.say(kind)

    def stop(self, key: Optional[str] = None) -> None:
        """Stop repeating for key (None: for all) and drop announcements not yet spoken."""
        with self._lock:
            if key is None:
                self._repeating.clear()
            else:
                self._repeating.pop(key, None)
            if not self._repeating:
                while not self._queue.empty():
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        break

    @property
    def active(self) -> bool:
        with self._lock:
            return bool(self._repeating)

    def close(self) -> None:
        self._stop.set()
        self.stop()
        self._queue.put(None)
        self._worker.join(timeout=2.0)

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            due = []
            with self._lock:
                for key, (kind, next_time) in list(self._repeating.items()):
                    if now >= next_time:
                        due.append(kind)
                        self._repeating[key] = (kind, now + self.config.repeat_interval_s)
            for kind in set(due):
                self.say(kind)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            for voice, text in batch:
                self._speak(voice, text)

    def _speak(self, voice: str, text: str) -> None:
        if shutil.which(self.config.command) is None:
            self._warn_once("engine", "speech: %s not found (apt-get install espeak-ng): spoken warnings are off",
                            self.config.command)
            return
        with tempfile.TemporaryDirectory(prefix="fall-edge-speech-") as tmp:
            wav = Path(tmp) / "message.wav"
            try:
                synthesize(text, voice, wav, self.config)
            except (OSError, subprocess.SubprocessError) as exc:
                self._warn_once(f"synth-{voice}", "speech: %s failed for voice %s (%s)", self.config.command,
                                voice, exc)
                return
            self._play(wav)

    def _play(self, wav: Path) -> None:
        if shutil.which("aplay") is None:
            self._warn_once("aplay", "speech: aplay not found (apt-get install alsa-utils): spoken warnings "
                                     "are synthesised but not played")
            self.spoken += 1
            return
        command = ["aplay", "-q"] + (["-D", self.config.alsa_device] if self.config.alsa_device else []) + [str(wav)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=_PLAY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._warn_once("play-timeout", "speech: aplay hung; check the sound device")
            return
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            self._warn_once("play", "speech: no sound device (%s): spoken warnings are off until one appears; "
                                    "set speech.alsa_device", reason)
            return
        self.spoken += 1

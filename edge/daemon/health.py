"""The device's health, beside the router: the periodic report to the control room (and to the
device page) and the parts that degrade the service now. It reads the pipelines' stats()
snapshots and the router's counters and sinks; it changes nothing."""


import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Optional, Sequence

from edge.daemon.pipeline import FallPipeline, iso_utc
from edge.daemon.router import EventRouter
from edge.daemon.runner import engine_notes
from edge.mqtt.connection import device_name


def read_temperatures() -> Dict[str, float]:
    """CPU/GPU temperatures where the platform exposes them (Jetson and most Linux boards)."""
    temperatures: Dict[str, float] = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        try:
            name = (zone / "type").read_text().strip()
            temperatures[name] = round(int((zone / "temp").read_text().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return temperatures


class HealthReporter:
    def __init__(self, router: EventRouter, sequence_problem: Optional[str] = None) -> None:
        self.router = router
        self.sequence_problem = sequence_problem  # why the learned sequence cue is off although enabled
        self.started = time.monotonic()
        self._last_sent = 0.0
        # The engines do not change while the daemon runs: their sidecars are read once.
        self.engines = engine_notes(router.config)

    def maybe_send(self, pipelines: Sequence[FallPipeline], force: bool = False,
                   cameras: Optional[Dict[str, Dict[str, int]]] = None) -> None:
        """Every mqtt.health_interval_s; cameras: capture counters per camera."""
        publisher = self.router.publisher
        if publisher is None:
            return
        publisher.set_problems(self.problems())  # cheap when nothing changed
        now = time.monotonic()
        if not force and now - self._last_sent < self.router.config.mqtt.health_interval_s:
            return
        self._last_sent = now
        publisher.send_health(self.report(pipelines, cameras or {}))

    def problems(self) -> Dict[str, str]:
        """The parts that degrade the service now: the outbox, the buzzer, speech, the sequence cue,
        event clips."""
        alarm, publisher = self.router.alarm, self.router.publisher
        out = dict(alarm.problems()) if alarm is not None else {}
        if publisher is not None and publisher.outbox.error:
            out["outbox"] = publisher.outbox.error
        if publisher is not None and publisher.journal.problem:
            out["journal"] = publisher.journal.problem
        if publisher is not None and publisher.name_conflict:
            out["device_name"] = publisher.name_conflict
        if self.sequence_problem:
            out["sequence_cue"] = self.sequence_problem
        clips = self.router.clips
        if clips is not None and clips.problem:
            out["clips"] = clips.problem
        return out

    def report(self, pipelines: Sequence[FallPipeline], cameras: Dict[str, Dict[str, int]]) -> Dict[str, object]:
        stats = [pipeline.stats() for pipeline in pipelines]
        stage_fps = {}
        for stage in {stage for one in stats for stage in one.recent_ms}:
            recent = [ms for one in stats for ms in one.recent_ms.get(stage, [])]
            if recent:
                stage_fps[stage] = round(1000.0 / max(1e-3, sum(recent) / len(recent)), 1)
        uptime = time.monotonic() - self.started
        frames = sum(one.frames_processed for one in stats)
        publisher, alarm = self.router.publisher, self.router.alarm
        return {
            "device": self.router.device or device_name(self.router.config.mqtt),  # MQTT off: the host name
            "ts": iso_utc(datetime.now(timezone.utc)),
            "uptime_s": round(uptime, 1),
            "frames_processed": frames,
            "processed_fps": round(frames / max(uptime, 1e-3), 2),
            "stage_fps": stage_fps,
            "dropped_frames": sum(int(counts.get("dropped_frames", 0)) for counts in cameras.values()),
            "cameras": cameras,
            "tracks": sum(one.tracks for one in stats),
            "events": dict(self.router.events_by_type),
            "outbox_depth": publisher.outbox.depth() if publisher else 0,
            "outbox_dropped": publisher.outbox.dropped() if publisher else 0,
            # of outbox_depth, the events the file could not take (held in memory, still sent)
            "outbox_memory": publisher.outbox.memory_depth() if publisher else 0,
            # why events wait in memory (disk full, corrupt file moved aside, ...); None when fine
            "outbox_error": publisher.outbox.error if publisher else None,
            # parts of the local alarm that do not work now (buzzer, speech): {} when all do
            "alarm_problems": alarm.problems() if alarm is not None else {},
            # spoken warnings played (or synthesised where there is no sound device) since the start
            "speech_spoken": alarm.speaker.spoken if alarm is not None and alarm.speaker is not None else 0,
            "mqtt_outages": publisher.outages if publisher else 0,
            # commands from the network refused (unsigned, malformed, replayed, unknown) and those
            # accepted whose handler failed: each contained to its message
            "commands_refused": publisher.commands_refused if publisher else 0,
            "commands_failed": publisher.commands_failed if publisher else 0,
            "temperatures_c": read_temperatures(),
            "python": sys.version.split()[0],
            # TensorRT engines: precision built and asked, and the fallbacks taken (e.g. FP16 for lack
            # of calibration images, with how to calibrate); {} on the CPU backends
            "engines": self.engines,
        }

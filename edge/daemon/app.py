"""The daemon as `fall-edge run` starts it: event sinks from the config, one or several
cameras, health, and a clean stop on SIGTERM."""


import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from edge.alarms.controller import LocalAlarm
from edge.capture import GstSource, open_source
from edge.config import Config
from edge.daemon.health import HealthReporter
from edge.daemon.notify import FrameLoopNotifier
from edge.daemon.pipeline import FallPipeline
from edge.daemon.router import EventRouter
from edge.daemon.runner import (
    CameraStream,
    FrameThinner,
    LoadGovernor,
    Models,
    VideoWriterSink,
    WindowSink,
    fan_out,
    process_cameras,
    process_video,
)
from edge.errors import FallEdgeError
from edge.types import FrameResult
from edge.viz.draw import draw_result
from edge.viz.trace import TraceWriter
from edge.web.board import LiveBoard


class StopRequestedError(Exception):
    """SIGTERM arrived: leave the run loop through its finally blocks."""


def install_stop_signals() -> None:
    """SIGTERM (systemd stop) ends the run cleanly, so MQTT says offline and flushes.

    The handler raises in the main thread, which also interrupts a wait for a camera that
    sends nothing."""

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough
        raise StopRequestedError()

    signal.signal(signal.SIGTERM, handler)


def build_router(config: Config, cameras: Optional[List[str]] = None) -> EventRouter:
    """The event sinks the config asks for: MQTT (with its outbox, and Home Assistant's discovery
    for these cameras), buzzer, speech."""
    publisher = bridge = None
    if config.mqtt.enabled:
        from edge.mqtt.outbox import Outbox
        from edge.mqtt.publisher import MqttPublisher

        publisher = MqttPublisher(config.mqtt, Outbox(Path(config.mqtt.outbox_path), config.mqtt.outbox_max_events))
        if config.homeassistant.enabled:
            from edge.mqtt.homeassistant import HomeAssistantBridge

            names = cameras or [config.output.camera]
            bridge = HomeAssistantBridge(config, publisher, {name: config.zones_of(name) for name in names})
            bridge.start()
        publisher.start()
    buzzer = speaker = None
    if config.buzzer.enabled:
        from edge.alarms.buzzer import ResilientBuzzer

        buzzer = ResilientBuzzer(config.buzzer)  # a GPIO line that will not open never stops detection
    if config.speech.enabled:
        from edge.alarms.speech import Speaker

        speaker = Speaker(config.speech)
    alarm = LocalAlarm(buzzer, speaker) if (buzzer or speaker) else None
    return EventRouter(config, publisher=publisher, alarm=alarm, homeassistant=bridge)


def capture_stats(source) -> dict:
    return {"outages": getattr(source, "outages", 0), "restarts": getattr(source, "restarts", 0),
            "dropped_frames": source.dropped_frames}


@dataclass
class RunOptions:
    pad_end_s: float = 0.0
    realtime: bool = False
    save_video: Optional[Path] = None
    show: bool = False
    trace_dir: Optional[Path] = None  # one JSON line per frame and track, per camera (diagnosis)


@dataclass
class RunSummary:
    """What a run did, for the CLI's closing line and --profile."""

    frames: int
    elapsed_s: float
    cameras: int
    events: int
    timings_ms: Dict[str, Sequence[float]]  # the pipeline's recent stage times (one camera)

    def line(self) -> str:
        where = f" from {self.cameras} cameras" if self.cameras > 1 else ""
        return (f"{self.frames} frames processed in {self.elapsed_s:.1f} s{where} "
                f"({self.frames / max(self.elapsed_s, 1e-9):.1f} frames/s), {self.events} events")


def _report(config: Config, health: HealthReporter, board: Optional[LiveBoard], pipelines: List[FallPipeline],
            cameras: Dict[str, dict], result: FrameResult) -> None:
    """After each frame: health to MQTT when due; the device page's picture (only while someone
    watches) and its health (once a second)."""
    health.maybe_send(pipelines, cameras=cameras)
    if board is not None:
        board.offer(result, lambda drawn: draw_result(drawn, config.pose.min_keypoint_score))
        if board.health_due():
            board.set_health(health.report(pipelines, cameras))


def _status_sink(router: EventRouter, notifier: Optional[FrameLoopNotifier], name: str):
    """A camera's online/offline reports, to the control room and to systemd's watchdog."""

    def report(status: str, reason: str) -> None:
        router.camera_status(name, status, reason)
        if notifier is not None:
            notifier.camera_status(name, status, reason)

    return report


def file_progress(video: object, name: str, pad_end_s: float) -> Optional[tqdm]:
    """A progress bar in stream seconds for a file on a terminal (a run on a file printed nothing
    until its end: 14 minutes on a loaded box); None for a live camera or when stderr is not a
    terminal (journald, a pipe)."""
    frames, fps = int(getattr(video, "frame_count", 0) or 0), float(getattr(video, "fps", 0.0) or 0.0)
    if getattr(video, "is_live", True) or not sys.stderr.isatty() or frames <= 0 or fps <= 0:
        return None
    return tqdm(total=round(frames / fps + pad_end_s, 1), desc=name, unit="s", file=sys.stderr, leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s of video [{elapsed}<{remaining}]")


def run_one_camera(config: Config, models: Models, router: EventRouter, name: str, source_text: str,
                   options: RunOptions, notifier: Optional[FrameLoopNotifier] = None,
                   board: Optional[LiveBoard] = None) -> RunSummary:
    pipeline = FallPipeline(config, models.pose, models.detector, sequence=models.sequence, camera=name)
    with open_source(source_text, config.capture, name=name, pad_end_s=options.pad_end_s,
                     realtime=options.realtime, on_status=_status_sink(router, notifier, name)) as video:
        writer = None
        if options.save_video:
            fps = config.output.process_fps or video.fps
            writer = VideoWriterSink(options.save_video, min(fps, video.fps))
        trace = TraceWriter(options.trace_dir, name, config.pose.min_keypoint_score) if options.trace_dir else None
        sink = fan_out(writer, WindowSink() if options.show else None, trace, router.handle)
        assert sink is not None
        health = HealthReporter(router, models.sequence_problem)
        started = time.monotonic()
        progress = file_progress(video, name, options.pad_end_s)
        try:
            for result in process_video(pipeline, video, config.output.process_fps):
                sink(result)
                if progress is not None:
                    progress.update(max(0.0, result.frame.time_s - progress.n))
                _report(config, health, board, [pipeline], {name: capture_stats(video)}, result)
                if notifier is not None:
                    notifier.frame(name)
            if progress is not None:
                progress.update(max(0.0, progress.total - progress.n))  # the file's end: the last frames were thinned
                progress.refresh()
        finally:
            for closing in (writer, trace, progress):
                if closing is not None:
                    closing.close()
    return RunSummary(pipeline.frames_processed, time.monotonic() - started, 1, router.events_sent,
                      dict(pipeline.timings_ms))


def run_cameras(config: Config, models: Models, router: EventRouter, cameras: List[Tuple[str, str]],
                trace_dir: Optional[Path] = None, notifier: Optional[FrameLoopNotifier] = None,
                board: Optional[LiveBoard] = None) -> RunSummary:
    """Several cameras: a capture worker each, one inference loop over all of them."""
    streams: List[CameraStream] = []
    traces: Dict[str, TraceWriter] = {}
    try:
        for name, text in cameras:
            source = open_source(text, config.capture, name=name, on_status=_status_sink(router, notifier, name))
            if not isinstance(source, GstSource):
                source.close()
                raise FallEdgeError(f"camera {name}: several cameras need GStreamer sources (set capture.reader "
                                    f"to auto or gst, and install GStreamer: scripts/bootstrap.sh)")
            pipeline = FallPipeline(config, models.pose, models.detector, sequence=models.sequence, camera=name)
            streams.append(CameraStream(name, source, pipeline, FrameThinner(config.output.process_fps)))
            if trace_dir is not None:
                traces[pipeline.camera] = TraceWriter(trace_dir, name, config.pose.min_keypoint_score)
        health = HealthReporter(router, models.sequence_problem)
        governor = LoadGovernor(config.output.min_process_fps)
        started = time.monotonic()
        for result in process_cameras(streams, governor):
            if result.camera in traces:
                traces[result.camera](result)
            router.handle(result)
            rates = governor.rates(time.monotonic())
            _report(config, health, board, [s.pipeline for s in streams],
                    {s.name: {**capture_stats(s.source), "processed_fps": rates.get(s.name, 0.0),
                              "shed_level": s.pipeline.shed_level} for s in streams}, result)
            if notifier is not None:
                notifier.frame(result.camera or "")
        return RunSummary(sum(s.pipeline.frames_processed for s in streams), time.monotonic() - started,
                          len(streams), router.events_sent, {})
    finally:
        for stream in streams:
            stream.source.close()
        for trace in traces.values():
            trace.close()

"""Build the pipeline from a config and run it over a video source."""


import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import cv2

from edge.capture.gst_source import GstSource
from edge.capture.opencv_source import OpenCvSource
from edge.config import Config, DetectorConfig, PoseConfig
from edge.daemon.notify import extending_start_timeout
from edge.daemon.pipeline import SHED_LEVELS, FallPipeline
from edge.errors import FallEdgeError, SourceError
from edge.perception import Detector, PoseEstimator
from edge.perception.sequence import SequenceScorer
from edge.private import private_file
from edge.types import Frame, FrameResult

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_model_path(path: str) -> Path:
    """Relative model paths resolve against the working directory, then the project root."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate
    in_project = PROJECT_ROOT / candidate
    return in_project if in_project.exists() else candidate


@dataclass
class Models:
    pose: PoseEstimator
    detector: Optional[Detector]
    sequence: Optional[SequenceScorer] = None  # the learned sequence cue (None: off, or it could not load)
    sequence_problem: Optional[str] = None  # why the cue is off although enabled (health, doctor)


def first_start_build_plan(section: Union[DetectorConfig, PoseConfig], engine: Path
                           ) -> Tuple[str, Optional[Path], Optional[str]]:
    """(precision, calibration folder, note) for building a missing engine at the start. INT8
    without calibration images yet (a new install: nothing has made the site's frames) builds
    FP16 rather than fail the start; the note says so, and how to calibrate later."""
    build = section.build
    folder = resolve_model_path(build.calibration_dir) if build.calibration_dir else None
    if build.precision != "int8":
        return build.precision, folder, None
    from edge.export.calibration import image_files

    if folder is not None and folder.is_dir() and image_files(folder):
        return "int8", folder, None
    where = build.calibration_dir or "a folder named in build.calibration_dir"
    note = (f"INT8 asked, but {where} has no calibration images yet: built FP16. To calibrate: "
            f"fall-edge calib-frames VIDEO... --out {where}, then delete {engine} and restart the service")
    return "fp16", None, note


def engine_path(section: Union[DetectorConfig, PoseConfig], name: str) -> Path:
    """The model path; for a missing TensorRT engine with build.source set, the engine is built
    first (minutes on a Jetson; once)."""
    path = resolve_model_path(section.model)
    if section.type != "tensorrt" or path.exists() or not section.build.source:
        return path
    from edge.backends.sidecar import read_sidecar, write_sidecar
    from edge.export.build_engines import BuildRequest, build

    precision, calibration, note = first_start_build_plan(section, path)
    if note:
        logger.warning("%s engine: %s", name, note)
    logger.warning("%s engine %s is missing: building it from %s (%s); this takes minutes", name, path,
                   section.build.source, precision)
    settings = {"detector": section} if isinstance(section, DetectorConfig) else {"pose": section}
    with extending_start_timeout(f"building the {name} engine (minutes, once)"):
        build(BuildRequest(source=resolve_model_path(section.build.source), out=path, precision=precision,
                           calib_dir=calibration, min_agreement=section.build.min_agreement, **settings))
    if note:  # kept with the engine, so the health report says it for as long as the engine is used
        info = read_sidecar(path)
        info.notes.append(note)
        write_sidecar(path, info)
    return path


def engine_notes(config: Config) -> Dict[str, Dict[str, object]]:
    """The TensorRT engines in use: precision built against precision asked, and the fallbacks
    their sidecars record (no fast INT8, no calibration images yet), for the health report."""
    from edge.backends.sidecar import read_sidecar

    out: Dict[str, Dict[str, object]] = {}
    for name, section in (("pose", config.pose), ("detector", config.detector)):
        path = resolve_model_path(section.model)
        if section.type != "tensorrt" or not path.is_file():
            continue
        try:
            info = read_sidecar(path)
        except FallEdgeError as exc:
            out[name] = {"error": str(exc)}
            continue
        out[name] = {"precision": info.precision, "requested_precision": info.requested_precision,
                     "notes": list(info.notes)}
    return out


def load_models(config: Config) -> Models:
    pose = PoseEstimator.from_config(config.pose, engine_path(config.pose, "pose"))
    detector = None
    if config.detector.enabled:
        detector = Detector.from_config(config.detector, engine_path(config.detector, "detector"))
    sequence, problem = load_sequence_cue(config)
    return Models(pose=pose, detector=detector, sequence=sequence, sequence_problem=problem)


def load_sequence_cue(config: Config) -> Tuple[Optional[SequenceScorer], Optional[str]]:
    """The learned cue, or (None, why): one cue among many, so a missing runtime (JetPack 4.6 has
    no ONNX Runtime for Python 3.6) or a damaged file degrades detection instead of stopping it."""
    if not config.sequence.enabled:
        return None, None
    try:
        return SequenceScorer.from_config(config.sequence, resolve_model_path(config.sequence.model)), None
    except (FallEdgeError, ImportError) as exc:
        problem = f"{exc}".splitlines()[0] if str(exc) else type(exc).__name__
        logger.error("the learned sequence cue is off (%s): falls are confirmed by the rules alone, without its "
                     "veto on controlled movements; fix it or set sequence.enabled: false", problem)
        return None, problem


class FrameThinner:
    """Keeps a stream's frames to process_fps (0: every frame) by their stream time."""

    def __init__(self, process_fps: float) -> None:
        self.period = 1.0 / process_fps if process_fps > 0 else 0.0
        self.next_due = 0.0

    def due(self, time_s: float) -> bool:
        if not self.period:
            return True
        if time_s + 1e-6 < self.next_due:
            return False
        # Stay on the source's time grid so the thinning does not drift.
        self.next_due = max(self.next_due + self.period, time_s)
        return True


def process_frames(pipeline: FallPipeline, frames: Iterable[Frame], process_fps: float,
                   prepare: Optional[Callable[[Frame], Frame]] = None) -> Iterator[FrameResult]:
    """Run the pipeline over frames, thinned to process_fps (0: every frame); `prepare` changes
    each frame that is kept (eval's variants) before the pipeline sees it."""
    thinner = FrameThinner(process_fps)
    for frame in frames:
        if thinner.due(frame.time_s):
            yield pipeline.process(prepare(frame) if prepare is not None else frame)


def process_video(pipeline: FallPipeline, video: OpenCvSource, process_fps: float) -> Iterator[FrameResult]:
    """Run the pipeline over a source, thinned to process_fps (0: every frame)."""
    return process_frames(pipeline, video.frames(), process_fps)


@dataclass
class CameraStream:
    """One camera: its own capture worker and its own pipeline (tracks, fall states)."""

    name: str
    source: GstSource
    pipeline: FallPipeline
    thinner: FrameThinner


@dataclass
class LoadGovernor:
    """Degrades by rule when the box cannot keep up: every camera should process at least
    min_fps frames a second (output.min_process_fps). Over the last window_s, when the slowest
    camera is under it, every pipeline sheds one more step of work (pipeline.SHED_LEVELS: fewer
    crops, then a sparser detector, then crops for fall candidates only); when the slowest is
    1.5x above it, one step comes back. One step per window, so a change is measured before the
    next. The round robin itself keeps the cameras even: each takes its newest frame in turn."""

    min_fps: float
    window_s: float = 5.0
    level: int = 0
    _times: Dict[str, deque] = field(default_factory=dict)
    _changed_at: float = field(default_factory=time.monotonic)

    def processed(self, camera: str, now: float) -> None:
        times = self._times.setdefault(camera, deque())
        times.append(now)
        while times and times[0] < now - self.window_s:
            times.popleft()

    def rates(self, now: float) -> Dict[str, float]:
        """Processed frames a second per camera over the last window."""
        span = min(self.window_s, max(1e-3, now - self._changed_at))
        return {camera: round(sum(1 for t in times if t >= now - span) / span, 2)
                for camera, times in self._times.items()}

    def decide(self, now: float, cameras: List[str]) -> Optional[int]:
        """The new shed level when it changes, else None."""
        if self.min_fps <= 0 or now - self._changed_at < self.window_s or not cameras:
            return None
        rates = self.rates(now)
        slowest = min(rates.get(camera, 0.0) for camera in cameras)
        level = self.level
        if slowest < self.min_fps and level < len(SHED_LEVELS) - 1:
            level += 1
        elif slowest >= 1.5 * self.min_fps and level > 0:
            level -= 1
        if level == self.level:
            return None
        logger.warning("load: the slowest camera processed %.1f frames/s (output.min_process_fps %.1f): work shed "
                       "level %d -> %d", slowest, self.min_fps, self.level, level)
        self.level, self._changed_at = level, now
        return level


def spread_detectors(pipelines: List[FallPipeline]) -> None:
    """Each camera's scheduled detector runs on a different frame of the round: camera i of n
    starts i/n of the way into detector.every_n_frames."""
    for index, pipeline in enumerate(pipelines):
        period = max(1, pipeline.config.detector.every_n_frames)
        pipeline.detector_phase = (index * period) // max(1, len(pipelines))


def process_cameras(streams: List[CameraStream], governor: Optional[LoadGovernor] = None) -> Iterator[FrameResult]:
    """Round robin over several cameras, newest frame of each, sharing the models on this thread
    (LiteRT interpreters are not thread-safe, and one inference thread is what a Jetson has).
    Their detectors run on different frames (a frame never pays for every camera's detector),
    and the governor, if any, sheds work when a camera falls under its minimum rate."""
    spread_detectors([stream.pipeline for stream in streams])
    names = [stream.name for stream in streams]
    while True:
        if all(stream.source.finished for stream in streams):
            return
        processed = False
        for stream in streams:
            frame = stream.source.poll(timeout_s=0.0)
            if frame is None or not stream.thinner.due(frame.time_s):
                continue
            processed = True
            result = stream.pipeline.process(frame)
            if governor is not None:
                now = time.monotonic()
                governor.processed(stream.name, now)
                level = governor.decide(now, names)
                if level is not None:
                    for each in streams:
                        each.pipeline.shed_level = level
            yield result
        if not processed:
            time.sleep(0.005)


class VideoWriterSink:
    """Write drawn frames to an mp4 (--save-video)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self._writer: Optional[cv2.VideoWriter] = None

    def __call__(self, result: FrameResult) -> None:
        from edge.viz.draw import draw_result

        canvas = draw_result(result)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only before the first frame lands: it shows people (and falls).
            private_file(self.path)
            height, width = canvas.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._writer.isOpened():
                raise SourceError(f"cannot write video {self.path}: check the folder exists and is writable")
        self._writer.write(canvas)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


class WindowSink:
    """Show drawn frames in a window (--show); needs a display and a GUI build of OpenCV."""

    def __call__(self, result: FrameResult) -> None:
        from edge.viz.draw import draw_result

        try:
            cv2.imshow("fall-edge", draw_result(result))
            cv2.waitKey(1)
        except cv2.error:
            raise SourceError("--show needs a display and opencv-python (not -headless): use --save-video") from None


def fan_out(*sinks: Optional[Callable[[FrameResult], None]]) -> Optional[Callable[[FrameResult], None]]:
    active: List[Callable[[FrameResult], None]] = [s for s in sinks if s is not None]
    if not active:
        return None

    def call_all(result: FrameResult) -> None:
        for sink in active:
            sink(result)

    return call_all

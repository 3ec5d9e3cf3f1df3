"""Per-stage timings of the pipeline and of each model alone (a benchmark, never a test)."""


import logging
import os
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
from tqdm import tqdm

from edge.capture import open_source
from edge.capture.opencv_source import OpenCvSource
from edge.clips.recorder import ClipService
from edge.config import Config
from edge.daemon.pipeline import FallPipeline
from edge.daemon.runner import CameraStream, FrameThinner, LoadGovernor, load_models, process_cameras
from edge.daemon.timings import format_timings, timing_stats
from edge.types import EventType, FallEvent

logger = logging.getLogger(__name__)

_MODEL_REPEATS = 30


def _time_model(call, repeats: int) -> List[float]:
    call()  # warm-up
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000.0)
    return out


def _frame_loop(config: Config, models, source: str, frames: int, clips: Optional[ClipService],
                label: str) -> Tuple[int, float, List[float], Dict[str, List[float]]]:
    """The pipeline over the first `frames` frames (with a clip ring fed, and one clip opened a
    third of the way in as a fall opens one, when clips is given): frames, wall time, decode times,
    stage times (total: the whole loop per frame, clip included)."""
    pipeline = FallPipeline(config, models.pose, models.detector, sequence=models.sequence)
    decode_ms: List[float] = []
    loop_ms: List[float] = []
    processed = 0
    wall_started = time.perf_counter()
    with OpenCvSource(source) as video, tqdm(total=frames, unit="frame", desc=label, file=sys.stderr,
                                            dynamic_ncols=True) as progress:
        iterator = video.frames()
        while processed < frames:
            started = time.perf_counter()
            frame = next(iterator, None)
            if frame is None:
                break
            decode_ms.append((time.perf_counter() - started) * 1000.0)
            started = time.perf_counter()
            result = pipeline.process(frame)
            if clips is not None:
                clips.offer(result)
                if processed == frames // 3:
                    clips.start(FallEvent(event_id=str(uuid.uuid4()), type=EventType.FALL_DETECTED,
                                          camera=result.camera, track_id=0, stream_time_s=frame.time_s,
                                          wall_time="", confidence=0.0, torso_angle_deg=None, bbox=[0, 0, 0, 0]))
            loop_ms.append((time.perf_counter() - started) * 1000.0)
            processed += 1
            progress.update()
    wall_s = time.perf_counter() - wall_started
    return processed, wall_s, decode_ms, {**pipeline.timings_ms, "frame_loop": loop_ms}


def run_bench(config: Config, source: str, frames: int,
              compare_clips: bool = False) -> Dict[str, Union[str, Dict, float]]:
    models = load_models(config)
    logger.info(f"timing the models alone ({_MODEL_REPEATS} runs each) ...")
    pose_tensor = np.zeros(models.pose.backend.input_shape, dtype=models.pose.backend.input_dtype)
    pose_times = _time_model(lambda: models.pose.backend.infer(pose_tensor), _MODEL_REPEATS)
    model_only = {"pose_model": timing_stats(pose_times)}
    if models.detector is not None:
        det_tensor = np.zeros(models.detector.backend.input_shape, dtype=models.detector.backend.input_dtype)
        model_only["detector_model"] = timing_stats(
            _time_model(lambda: models.detector.backend.infer(det_tensor), max(5, _MODEL_REPEATS // 3)))

    logger.info(f"running the pipeline on {frames} frames of {source} ...")
    processed, wall_s, decode_ms, timings = _frame_loop(config, models, source, frames, None, "bench")
    stages = {"decode": decode_ms, **timings}
    report: Dict[str, Union[str, Dict, float]] = {
        "source": source,
        "frames": processed,
        "cpu_count": os.cpu_count() or 0,
        "pipeline_fps": round(processed / wall_s, 2) if wall_s else 0.0,
        "stages": {name: timing_stats(values) for name, values in stages.items() if values},
        "models_alone": model_only,
    }
    text = [f"source {source}, {processed} frames, {report['cpu_count']} CPUs: "
            f"{report['pipeline_fps']} frames/s end to end (every frame processed)",
            format_timings(stages), "", "models alone:"]
    for name, s in model_only.items():
        text.append(f"{name:<15} median {s['median_ms']:.2f} ms  p90 {s['p90_ms']:.2f} ms")
    if compare_clips:
        report["clips"] = _clip_comparison(config, models, source, frames, stages["frame_loop"], text)
    report["text"] = "\n".join(text)
    return report


def _clip_comparison(config: Config, models, source: str, frames: int, without_ms: List[float],
                     text: List[str]) -> Dict[str, object]:
    """The same frames again with the clip ring fed and one clip written meanwhile."""
    with tempfile.TemporaryDirectory() as folder:
        clips = ClipService(replace(config.clip, dir=folder), config.mqtt.snapshot_privacy, None)
        logger.info("again with event clips (the ring buffer fed, one clip written meanwhile) ...")
        _, _, _, timings = _frame_loop(config, models, source, frames, clips, "bench with clips")
        ring_bytes = clips.memory_bytes()
        clips.close()
        written = clips.last_clip or {}
    with_ms = timings["frame_loop"]
    out = {"frame_loop_without_clips": timing_stats(without_ms), "frame_loop_with_clips": timing_stats(with_ms),
           "ring_buffer_bytes": ring_bytes, "clip": written}
    text += ["", f"frame loop median without clips {out['frame_loop_without_clips']['median_ms']:.2f} ms, "
                 f"with clips {out['frame_loop_with_clips']['median_ms']:.2f} ms "
                 f"(p90 {out['frame_loop_without_clips']['p90_ms']:.2f} / "
                 f"{out['frame_loop_with_clips']['p90_ms']:.2f} ms); ring buffer {ring_bytes / 1e6:.1f} MB; "
                 f"clip {written.get('codec')} {written.get('frames')} frames {written.get('bytes')} bytes"]
    return out


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cameras_once(config: Config, models, sources: List[str], seconds: float, warmup_s: float,
                  stagger_s: float) -> Dict[str, object]:
    """The real multi-camera loop (capture workers, round robin, shared models) over these live
    sources: per camera processed frames/s and dropped frames over `seconds` after a warm-up."""
    streams: List[CameraStream] = []
    try:
        for index, text in enumerate(sources):
            name = f"cam{index + 1}"
            if index:
                time.sleep(stagger_s)  # a different start offset each: they never show the same frame
            streams.append(CameraStream(name, open_source(text, config.capture, name=name),
                                        FallPipeline(config, models.pose, models.detector, sequence=models.sequence,
                                                     camera=name),
                                        FrameThinner(config.output.process_fps)))
        governor = LoadGovernor(config.output.min_process_fps)
        loop = process_cameras(streams, governor)
        warm_until = time.monotonic() + warmup_s
        for _ in loop:
            if time.monotonic() >= warm_until:
                break
        processed = {s.name: s.pipeline.frames_processed for s in streams}
        dropped = {s.name: s.source.dropped_frames for s in streams}
        timings_from = {s.name: {k: len(v) for k, v in s.pipeline.timings_ms.items()} for s in streams}
        cpu_started, started = _cpu_seconds(), time.monotonic()
        with tqdm(total=round(seconds), unit="s", desc=f"{len(streams)} cameras", file=sys.stderr,
                  dynamic_ncols=True) as progress:
            for _ in loop:
                elapsed = time.monotonic() - started
                progress.update(int(elapsed) - progress.n)
                if elapsed >= seconds:
                    break
        wall_s = time.monotonic() - started
        cpu_s = _cpu_seconds() - cpu_started
        stages: Dict[str, List[float]] = {}
        for stream in streams:
            for stage, values in stream.pipeline.timings_ms.items():
                stages.setdefault(stage, []).extend(list(values)[timings_from[stream.name].get(stage, 0):])
        cameras = {s.name: {"processed_fps": round((s.pipeline.frames_processed - processed[s.name]) / wall_s, 2),
                            "dropped_frames": s.source.dropped_frames - dropped[s.name]} for s in streams}
        return {"cameras": cameras, "shed_level": governor.level, "seconds": round(wall_s, 1),
                "cpu_percent": round(100.0 * cpu_s / wall_s, 1),
                "rss_mb": round(_rss_mb(), 1), "stages": {k: timing_stats(v) for k, v in stages.items() if v},
                "stage_times": stages}
    finally:
        for stream in streams:
            stream.source.close()


def run_camera_bench(config: Config, source: str, cameras: int, seconds: float = 30.0,
                     warmup_s: float = 5.0) -> Dict[str, object]:
    """`fall-edge bench --cameras N`: one camera, then N, through the real multi-camera loop, each a
    live replay of the clip (replay://, at capture.fps, thinned to output.process_fps) started a
    little later than the one before; the ratios between the two runs are what travels between
    machines."""
    if "://" not in source and not source.startswith("gst:"):
        source = "replay://" + str(Path(source).resolve())
    models = load_models(config)
    report: Dict[str, object] = {"source": source, "cpu_count": os.cpu_count() or 0,
                                 "process_fps": config.output.process_fps, "runs": {}}
    text = []
    for count in sorted({1, cameras}):
        logger.info(f"{count} camera(s) for {seconds:.0f} s after a {warmup_s:.0f} s warm-up ...")
        run = _cameras_once(config, models, [source] * count, seconds, warmup_s, stagger_s=seconds / max(count, 1) / 4)
        stage_times = run.pop("stage_times")
        report["runs"][str(count)] = run  # type: ignore[index]
        rates = [c["processed_fps"] for c in run["cameras"].values()]  # type: ignore[union-attr]
        text += [f"{count} camera(s): processed frames/s per camera " +
                 ", ".join(f"{name} {c['processed_fps']:.1f} ({c['dropped_frames']} dropped)"
                           for name, c in run["cameras"].items()) +  # type: ignore[union-attr]
                 f"; min {min(rates):.1f}, total {sum(rates):.1f}; work shed level {run['shed_level']}; "
                 f"CPU {run['cpu_percent']:.0f}% of one core, RSS {run['rss_mb']:.0f} MB",
                 format_timings(stage_times), ""]
    if cameras > 1:
        one = report["runs"]["1"]["cameras"]["cam1"]["processed_fps"]  # type: ignore[index]
        many = report["runs"][str(cameras)]["cameras"]  # type: ignore[index]
        ratios = {name: round(c["processed_fps"] / one, 3) if one else 0.0 for name, c in many.items()}
        report["ratio_to_one_camera"] = ratios
        text.append("per camera against one camera alone: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    report["text"] = "\n".join(text)
    return report

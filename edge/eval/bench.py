"""Per-stage timings of the pipeline and of each model alone (a benchmark, never a test)."""


import logging
import os
import sys
import time
from typing import Dict, List, Union

import numpy as np
from tqdm import tqdm

from edge.capture.opencv_source import OpenCvSource
from edge.config import Config
from edge.daemon.pipeline import FallPipeline
from edge.daemon.runner import load_models
from edge.daemon.timings import format_timings, timing_stats

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


def run_bench(config: Config, source: str, frames: int) -> Dict[str, Union[str, Dict, float]]:
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
    pipeline = FallPipeline(config, models.pose, models.detector, sequence=models.sequence)
    decode_ms: List[float] = []
    processed = 0
    wall_started = time.perf_counter()
    with OpenCvSource(source) as video, tqdm(total=frames, unit="frame", desc="bench", file=sys.stderr,
                                            dynamic_ncols=True) as progress:
        iterator = video.frames()
        while processed < frames:
            started = time.perf_counter()
            frame = next(iterator, None)
            if frame is None:
                break
            decode_ms.append((time.perf_counter() - started) * 1000.0)
            pipeline.process(frame)
            processed += 1
            progress.update()
    wall_s = time.perf_counter() - wall_started
    stages = {"decode": decode_ms, **pipeline.timings_ms}
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
    report["text"] = "\n".join(text)
    return report

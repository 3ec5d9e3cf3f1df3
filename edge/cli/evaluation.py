"""`fall-edge eval`, `eval-diff` and `bench`: how well and how fast."""

import argparse
import json
import sys
from pathlib import Path

from edge.errors import FallEdgeError


def register(commands: "argparse._SubParsersAction") -> None:
    evaluate = commands.add_parser("eval", help="score the detector on folders of labelled clips")
    evaluate.add_argument("clips_dirs", type=Path, nargs="+", metavar="CLIPS_DIR")
    evaluate.add_argument("--labels", type=Path, help="TSV: file, label (fall|nofall), fall_start_s "
                                                      "(default: labels.tsv or MANIFEST.tsv in each folder)")
    evaluate.add_argument("--config", type=Path)
    evaluate.add_argument("--pad-end", type=float, default=6.0, metavar="S",
                          help="hold each clip's last frame for S seconds (default 6)")
    evaluate.add_argument("--variants", default="plain", metavar="LIST",
                          help="harder versions of every clip, each a column: plain,dim,small,cut,drop,occlude "
                               "or all (default plain)")
    evaluate.add_argument("--jobs", type=int, default=1, help="clips evaluated at once (worker processes)")
    evaluate.add_argument("--trace", type=Path, metavar="DIR", help="one JSON line per frame and track, per clip")
    evaluate.add_argument("--save-video", type=Path, metavar="DIR", help="the drawn frames of each clip, as mp4")
    evaluate.add_argument("--cache", type=Path, metavar="DIR",
                          help="where the models' outputs are kept and reused (default $XDG_CACHE_HOME/fall-edge, "
                               "i.e. ~/.cache/fall-edge)")
    evaluate.add_argument("--no-cache", action="store_true", help="run every model call, keep nothing")
    evaluate.add_argument("--cache-max-gb", type=float, default=3.0, metavar="GB",
                          help="the cache is trimmed to this size after the eval (default 3)")
    evaluate.add_argument("--only", action="append", default=[], metavar="GLOB",
                          help="only these clips: a glob on the file name, its stem or stem.variant (repeatable)")
    evaluate.add_argument("--rerun-failures", type=Path, metavar="RESULT.json",
                          help="only the misses and false alarms of an earlier `eval --json` result")
    evaluate.add_argument("--sequence-loso", type=Path, metavar="DIR",
                          help="score each clip with the sequence model trained without its source "
                               "(DIR from scripts/train_sequence.py --loso)")
    evaluate.add_argument("--json", action="store_true", help="print JSON (per-clip list and summary)")
    evaluate.set_defaults(handler=_cmd_eval)

    eval_diff = commands.add_parser("eval-diff", help="clips whose outcome changed between two `eval --json` results")
    eval_diff.add_argument("old", type=Path)
    eval_diff.add_argument("new", type=Path)
    eval_diff.set_defaults(handler=_cmd_eval_diff)

    bench = commands.add_parser("bench", help="per-stage timings of the pipeline on a video")
    bench.add_argument("--config", type=Path)
    bench.add_argument("--source", help="video file (default: opencv-doc's vtest.avi)")
    bench.add_argument("--frames", type=int, default=100, help="frames to process (default 100)")
    bench.add_argument("--cameras", type=int, metavar="N",
                       help="N live replays of the source through the multi-camera loop (and 1, for the ratio): "
                            "processed frames/s per camera, drops, stages, CPU, RSS")
    bench.add_argument("--seconds", type=float, default=30.0, help="with --cameras: how long each run is measured")
    bench.add_argument("--clips", action="store_true",
                       help="run the frames again with event clips recorded, and print both frame loop medians")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(handler=_cmd_bench)
def _cmd_eval(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.eval.compare import failures, read_result, run_metadata
    from edge.eval.evaluate import (
        EvalOptions,
        cache_line,
        evaluate,
        format_report,
        list_jobs,
        results_json,
        select_jobs,
    )
    from edge.eval.variants import VARIANTS, parse_variants
    from edge.perception.output_cache import default_cache_dir, trim_cache

    config = load_config(args.config)
    if args.jobs < 1:
        raise FallEdgeError(f"--jobs must be at least 1, got {args.jobs}")
    if args.cache_max_gb <= 0:
        raise FallEdgeError(f"--cache-max-gb must be above 0, got {args.cache_max_gb}")
    cases = failures(read_result(args.rerun_failures)) if args.rerun_failures else None
    # --rerun-failures brings its own variants: every one it names is listed, then narrowed to its cases.
    variants = sorted({v for _, v in cases}, key=VARIANTS.index) if cases else parse_variants(args.variants)
    if cases is not None and not cases:
        sys.stderr.write(f"fall-edge: {args.rerun_failures} has no misses or false alarms: nothing to re-run\n")
        return 0
    jobs = select_jobs(list_jobs(args.clips_dirs, args.labels, variants), args.only, cases)
    cache_dir = None if args.no_cache else (args.cache or default_cache_dir())
    options = EvalOptions(pad_end_s=args.pad_end, cache_dir=cache_dir, trace_dir=args.trace,
                          video_dir=args.save_video, sequence_loso=args.sequence_loso)
    results = evaluate(config, jobs, options, jobs=args.jobs)
    size = trim_cache(cache_dir, int(args.cache_max_gb * 2**30)) if cache_dir is not None else 0
    meta = run_metadata(config, variants, args.clips_dirs)
    print(json.dumps(results_json(results, meta=meta), indent=2) if args.json else format_report(results))
    sys.stderr.write(cache_line(results, cache_dir, size) + "\n")
    return 0


def _cmd_eval_diff(args: argparse.Namespace) -> int:
    from edge.eval.compare import describe_meta, diff_results, read_result

    old, new = read_result(args.old), read_result(args.new)
    print(describe_meta(f"old {args.old}", old))
    print(describe_meta(f"new {args.new}", new))
    lines = diff_results(old, new)
    print("\n".join(lines) if lines else "no clip changed outcome")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from edge.capture.uri import SAMPLE_VIDEO
    from edge.config import load_config
    from edge.eval.bench import run_bench

    config = load_config(args.config)
    source = args.source or str(SAMPLE_VIDEO)
    if args.cameras:
        if args.cameras < 1:
            raise FallEdgeError("--cameras must be 1 or more")
        from edge.eval.bench import run_camera_bench

        report = run_camera_bench(config, source, args.cameras, args.seconds)
        print(json.dumps(report, indent=2) if args.json else report["text"])
        return 0
    report = run_bench(config, source, args.frames, compare_clips=args.clips)
    print(json.dumps(report, indent=2) if args.json else report["text"])
    return 0



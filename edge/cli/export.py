"""`fall-edge build-engines` and the tools around it: checkpoints to ONNX and TensorRT engines,
calibration frames, the CPU's INT8 ONNX, and how far a quantized model agrees with its reference."""

import argparse
import json
import sys
from pathlib import Path

from edge.errors import FallEdgeError


def register(commands: "argparse._SubParsersAction") -> None:
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
    build.set_defaults(handler=_cmd_build_engines)

    frames = commands.add_parser("calib-frames", help="save video frames as calibration images")
    frames.add_argument("videos", nargs="+", type=Path)
    frames.add_argument("--out", type=Path, required=True)
    frames.add_argument("--every-s", type=float, default=1.0, help="one frame every this many seconds")
    frames.add_argument("--limit", type=int, default=500)
    frames.set_defaults(handler=_cmd_calib_frames)

    quantize = commands.add_parser("quantize-onnx", help="INT8 ONNX for the CPU backend (ONNX Runtime static)")
    quantize.add_argument("--source", type=Path, required=True, help="the float ONNX")
    quantize.add_argument("--out", type=Path, required=True)
    quantize.add_argument("--calib-dir", type=Path, required=True)
    quantize.add_argument("--kind", choices=["yolo", "trt_pose"], default="yolo")
    quantize.add_argument("--keep-float", action="append", default=None,
                          help="node name prefix kept in float (repeatable; yolo default: its head, /model.22/)")
    quantize.add_argument("--calib-limit", type=int, default=0)
    quantize.set_defaults(handler=_cmd_quantize)

    compare = commands.add_parser("compare-detectors", help="speed and detections of two detector models on videos")
    compare.add_argument("reference", type=Path, help="e.g. models/fall_yolov8s.onnx")
    compare.add_argument("candidate", type=Path, help="e.g. the INT8 ONNX from quantize-onnx")
    compare.add_argument("videos", nargs="+", type=Path)
    compare.add_argument("--every-n", type=int, default=5, help="use every Nth frame")
    compare.add_argument("--config", type=Path, help="detector settings (class names, thresholds)")
    compare.set_defaults(handler=_cmd_compare)

    agreement = commands.add_parser("int8-agreement", help="how far an INT8 model agrees with its full-precision "
                                                           "reference on images (the build's check, any backend)")
    agreement.add_argument("reference", type=Path, help="the float model: .onnx (ONNX Runtime) or .engine")
    agreement.add_argument("candidate", type=Path, help="the INT8 one: quantize-onnx's .onnx or an INT8 .engine")
    agreement.add_argument("images", type=Path, help="a folder of frames, e.g. from calib-frames")
    agreement.add_argument("--kind", choices=["yolo", "trt_pose"], default="yolo")
    agreement.add_argument("--config", type=Path, help="detector/pose settings (classes, thresholds, the floor)")
    agreement.add_argument("--limit", type=int, default=0, help="use at most this many images")
    agreement.add_argument("--min-agreement", type=float,
                           help="the floor (default: the config's build.min_agreement); exit 1 under it")
    agreement.set_defaults(handler=_cmd_int8_agreement)


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
    floor = section.build.min_agreement if args.min_agreement is None else args.min_agreement
    keep, message = int8_verdict(result, floor)
    sys.stderr.write(message + "\n")
    print(json.dumps(dict(result.as_dict(), min_agreement=floor, kept=keep), indent=2))
    return 0 if keep else 1



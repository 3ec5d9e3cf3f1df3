"""`fall-edge run`: the daemon."""

import argparse
import functools
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional

from edge.errors import FallEdgeError

if TYPE_CHECKING:
    from edge.web.device_page import DevicePage


def register(commands: "argparse._SubParsersAction") -> None:
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
    run.add_argument("--http", metavar="HOST:PORT",
                     help="serve the device page: live view with skeletons, /health, /metrics "
                          "(default: the config's output.http; off when empty)")
    run.set_defaults(handler=_stoppable(_cmd_run))


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
    router = build_router(config, [name for name, _ in cameras])
    install_stop_signals()
    # Under systemd (Type=notify): READY once every camera gave a frame, watchdog pings from the loop.
    notifier = FrameLoopNotifier(SystemdNotifier(), {name for name, _ in cameras})
    page = None
    try:
        page = _device_page(args.http or config.output.http, [name for name, _ in cameras],
                            config.output.http_max_fps, {name: config.zones_of(name) for name, _ in cameras})
        if len(cameras) > 1:
            summary = run_cameras(config, models, router, cameras, trace_dir=args.trace, notifier=notifier,
                                  board=page.board if page else None)
        else:
            options = RunOptions(pad_end_s=args.pad_end, realtime=args.realtime, save_video=args.save_video,
                                 show=args.show, trace_dir=args.trace)
            summary = run_one_camera(config, models, router, *cameras[0], options, notifier=notifier,
                                     board=page.board if page else None)
    finally:
        notifier.stopping()
        router.close()
        if page is not None:
            page.stop()
    sys.stderr.write(f"fall-edge: {summary.line()}\n")
    if args.profile and summary.timings_ms:
        sys.stderr.write(format_timings(summary.timings_ms) + "\n")
    return 0


def _device_page(listen: str, cameras: List[str], max_fps: float, zones: dict) -> "Optional[DevicePage]":
    if not listen:
        return None
    from edge.web.board import LiveBoard
    from edge.web.device_page import DevicePage

    page = DevicePage(LiveBoard(cameras, max_fps=max_fps, zones=zones), listen).start()
    sys.stderr.write(f"fall-edge: device page on http://{page.address[0]}:{page.address[1]}/\n")
    return page


def _stoppable(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from edge.daemon.app import StopRequestedError

        try:
            return command(args)
        except StopRequestedError:
            sys.stderr.write("fall-edge: stopped\n")
            return 0

    return run

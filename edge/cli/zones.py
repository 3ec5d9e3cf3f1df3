"""`fall-edge zones`: a camera's configured zones drawn on one of its frames, for a check on site."""

import argparse
from pathlib import Path


def register(commands: "argparse._SubParsersAction") -> None:
    zones = commands.add_parser("zones", help="draw a camera's configured zones on one of its frames")
    zones.add_argument("--config", type=Path, required=True, help="YAML config with the zones")
    zones.add_argument("--camera", help="a camera under `cameras` (default: the first; with --source: "
                                        "output.camera)")
    zones.add_argument("--source", help="read the frame from this source instead of the camera's own")
    zones.add_argument("--at", type=float, default=0.0, metavar="S", help="a file's frame at S seconds (default 0)")
    zones.add_argument("--snapshot", type=Path, required=True, metavar="OUT.jpg",
                       help="where the drawn frame is written (owner-only: it shows the site)")
    zones.set_defaults(handler=_cmd_zones)


def _cmd_zones(args: argparse.Namespace) -> int:
    import cv2

    from edge.capture import open_source
    from edge.config import load_config
    from edge.errors import FallEdgeError, SourceError
    from edge.geometry import polygon_area
    from edge.private import open_private
    from edge.viz.draw import draw_zones

    config = load_config(args.config)
    if args.source:
        camera, source = args.camera or config.output.camera, args.source
    else:
        listed = [c for c in config.cameras if args.camera in (None, c.name)]
        if not listed:
            known = ", ".join(c.name for c in config.cameras) or "none"
            raise FallEdgeError(f"camera {args.camera or '(first)'} is not in the config's cameras (known: {known}): "
                                f"pass --camera with one of them, or --source")
        camera, source = listed[0].name, listed[0].source
    zones = config.zones_of(camera)
    if not zones:
        raise FallEdgeError(f"camera {camera} has no zones in {args.config}: add them under its `zones` "
                            f"(README \"Zones\")")
    reader = open_source(source, config.capture, name=camera)
    frame = None
    try:
        for candidate in reader.frames():
            frame = candidate
            if candidate.time_s >= args.at:
                break
    finally:
        reader.close()
    if frame is None:
        raise SourceError(f"{source} gave no frame: check the camera with `fall-edge doctor`")
    canvas = draw_zones(frame.image.copy(), zones)
    ok, jpeg = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise FallEdgeError(f"the frame of {camera} could not be encoded as JPEG")
    with open_private(args.snapshot, "wb") as handle:
        handle.write(jpeg.tobytes())
    height, width = frame.image.shape[:2]
    print(f"{camera}: frame at {frame.time_s:.2f} s, {width}x{height}, {len(zones)} zones -> {args.snapshot}")
    for zone in zones:
        print(f"  {zone.name:<16} {zone.kind:<6} {len(zone.polygon)} points, {100 * polygon_area(zone.polygon):.1f}% "
              f"of the frame")
    return 0

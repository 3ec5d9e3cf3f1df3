"""fall-edge command line: a thin layer over the package; errors print as one line.

Each area registers its own subcommands (`register(commands)`, each with a `handler`), so a
command's options and code sit together; the handlers import their area lazily, which keeps
`fall-edge --help` fast and the Jetson's import path to what its commands use."""


import argparse
import logging
import sys
from typing import Dict, List, Optional, Tuple

from edge import __version__
from edge.cli import capture, console, daemon, evaluation, export, mqtt, site, zones
from edge.errors import FallEdgeError

AREAS = (daemon, evaluation, mqtt, console, capture, export, site, zones)  # in the order --help lists their commands
# Loggers of long steps (engine builds, model fetches, benchmarks): their progress lines show by default.
_PROGRESS_LOGGERS = ("edge.export", "edge.modelstore", "edge.eval.bench", "edge.mqtt.bench", "edge.capture.bench")


def build_parser() -> Tuple[argparse.ArgumentParser, Dict[str, argparse.ArgumentParser]]:
    """The parser, and each command's own parser by name."""
    parser = argparse.ArgumentParser(prog="fall-edge", description="On-device fall detection.")
    parser.add_argument("--version", action="version", version=f"fall-edge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    commands = parser.add_subparsers(dest="command")
    commands.required = True  # add_subparsers(required=) is Python 3.7+; JetPack 4.6 has 3.6
    for area in AREAS:
        area.register(commands)
    return parser, dict(commands.choices)


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in _PROGRESS_LOGGERS:
        logging.getLogger(name).setLevel(min(level, logging.INFO))


def main(argv: Optional[List[str]] = None) -> int:
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.handler(args)
    except FallEdgeError as exc:
        print(f"fall-edge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0

"""`fall-edge console` (the control room in a browser) and `console-password` (an operator's hash)."""

import argparse
import logging
import signal
import sys
from pathlib import Path

from edge.cli.mqtt import broker_arguments, broker_config
from edge.errors import FallEdgeError

_MIN_PASSWORD = 10


def register(commands: "argparse._SubParsersAction") -> None:
    console = commands.add_parser("console", help="the control room in a browser: devices, alarms with pictures, "
                                                  "acknowledge, history (live)")
    broker_arguments(console)
    console.add_argument("--listen", metavar="HOST:PORT", help="where the page is served (default: the config's "
                                                                "console.listen, 127.0.0.1:8080)")
    console.add_argument("--db", type=Path, help="the event log, SQLite (default: the config's console.db)")
    console.add_argument("--client-id", default="fall-edge-console",
                         help="MQTT client id; the broker keeps events for it while it is away")
    console.set_defaults(handler=_cmd_console)

    password = commands.add_parser("console-password", help="hash an operator's password for the config's "
                                                            "console.operators (reads it from the terminal or stdin)")
    password.set_defaults(handler=_cmd_console_password)


def _cmd_console(args: argparse.Namespace) -> int:
    try:
        from waitress import create_server

        from edge.console.app import SERVER_THREADS, Hub, create_app, session_secret
    except ImportError as exc:
        raise FallEdgeError(f"the console needs Flask and waitress ({exc}): pip install -e \".[console]\"") from None
    from edge.config import load_config
    from edge.config.rules import is_loopback, parse_listen
    from edge.console.log import EventLog
    from edge.mqtt.monitor import Monitor

    console = load_config(args.config).console
    if not console.operators and not console.auth_header:
        raise FallEdgeError("no operator can log in: add console.operators to the config (hashes from "
                            "`fall-edge console-password`) or set console.auth_header behind a login proxy")
    listen = args.listen or console.listen
    address = parse_listen(listen)
    if console.auth_header and not is_loopback(address[0]):
        # Anyone who reaches the port can send the header: only the login proxy may reach it.
        logging.getLogger(__name__).warning(
            "console: console.auth_header is set and the console listens on %s, beyond this machine: anyone "
            "who can reach it can name themselves an operator; listen on 127.0.0.1 behind the login proxy",
            address[0])
    db = args.db or Path(console.db)
    hub = Hub()

    def on_event(event: dict, new: bool) -> None:
        if new:
            hub.publish(str(event.get("type")))

    monitor = Monitor(broker_config(args), db, client_id=args.client_id, on_event=on_event, everything=True,
                      snapshot_keep=console.snapshot_keep,
                      snapshot_max_age_s=console.snapshot_max_age_days * 86400.0)
    app = create_app(console, EventLog(db), monitor, hub, session_secret(db))
    try:
        server = create_server(app, host=address[0], port=address[1], threads=SERVER_THREADS, ident="fall-edge")
    except OSError as exc:
        raise FallEdgeError(f"--listen {listen}: cannot listen there ({exc.strerror or exc}): pick a free port") \
            from None
    monitor.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.stderr.write(f"fall-edge: console on http://{address[0]}:{address[1]}/ (event log {db})\n")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        monitor.stop()
        hub.close()
    return 0


def _cmd_console_password(args: argparse.Namespace) -> int:
    import getpass

    try:
        from werkzeug.security import generate_password_hash
    except ImportError:
        raise FallEdgeError("hashing needs werkzeug (Flask's): pip install -e \".[console]\"") from None

    if sys.stdin.isatty():
        password = getpass.getpass("operator's password: ")
        if getpass.getpass("again: ") != password:
            raise FallEdgeError("the two passwords differ: run it again")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < _MIN_PASSWORD:
        raise FallEdgeError(f"the password has {len(password)} characters: use at least {_MIN_PASSWORD}")
    print(f"password_hash: {generate_password_hash(password)}")
    return 0

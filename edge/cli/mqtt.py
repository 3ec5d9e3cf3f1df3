"""`fall-edge monitor` and `bench-mqtt`: the control room's side of the broker."""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import MqttConfig


def register(commands: "argparse._SubParsersAction") -> None:
    monitor = commands.add_parser("monitor", help="control room: live devices and alarms from the broker")
    broker_arguments(monitor)
    monitor.add_argument("--db", type=Path, default=Path("var/monitor.sqlite"), help="local event log (SQLite)")
    monitor.add_argument("--json", action="store_true", help="one JSON line per new event (for scripts)")
    monitor.add_argument("--ack", metavar="EVENT_ID", help="acknowledge an event and exit")
    monitor.add_argument("--device", help="with --ack: the event's device, when the log does not have it")
    monitor.add_argument("--webhook", metavar="URL", help="POST every alarm as JSON to this URL")
    monitor.add_argument("--duration", type=float, default=0.0, help="stop after S seconds (default: run on)")
    monitor.add_argument("--client-id", default="fall-edge-monitor",
                         help="MQTT client id; the broker keeps events for it while it is away")
    monitor.set_defaults(handler=_cmd_monitor)

    bench_mqtt = commands.add_parser("bench-mqtt", help="events/s and latency through the outbox to a broker")
    broker_arguments(bench_mqtt)
    bench_mqtt.add_argument("--events", type=int, default=2000)
    bench_mqtt.add_argument("--json", action="store_true")
    bench_mqtt.set_defaults(handler=_cmd_bench_mqtt)


def broker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="take the broker settings from this config's mqtt section")
    parser.add_argument("--broker", metavar="HOST[:PORT]", help="broker address (default 127.0.0.1:1883)")
    parser.add_argument("--prefix", help="topic prefix (default fall)")
    parser.add_argument("--username")
    parser.add_argument("--password-file", help="file holding the password (or set FALL_EDGE_MQTT_PASSWORD)")
    parser.add_argument("--ca-file", help="CA certificate: connect with TLS")
    parser.add_argument("--cert-file", help="client certificate (TLS)")
    parser.add_argument("--key-file", help="client key (TLS)")
    parser.add_argument("--command-key-file", help="the site's command-signing key: acks are signed with it")


def broker_config(args: argparse.Namespace) -> "MqttConfig":
    """The config's mqtt section with the command line's broker options on top."""
    from dataclasses import replace

    from edge.config import load_config
    from edge.errors import ConfigError

    changes = {key: getattr(args, key) for key in ("prefix", "username", "password_file", "ca_file", "cert_file",
                                                    "key_file", "command_key_file") if getattr(args, key)}
    if args.broker:
        host, _, port = args.broker.rpartition(":") if ":" in args.broker else (args.broker, "", "")
        changes["host"] = host or args.broker
        if port:
            if not port.isdigit():
                raise ConfigError(f"--broker {args.broker}: the port must be a number")
            changes["port"] = int(port)
    return replace(load_config(args.config).mqtt, **changes)


def _cmd_monitor(args: argparse.Namespace) -> int:
    from edge.mqtt.monitor import Monitor, Webhook, print_event_line

    mqtt = broker_config(args)
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

    report = run_mqtt_bench(broker_config(args), args.events)
    print(json.dumps(report, indent=2) if args.json else report["text"])
    return 0


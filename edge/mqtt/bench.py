"""`fall-edge bench-mqtt`: events/s through the outbox to the broker, and end-to-end latency
from event creation to a subscriber's receipt (a benchmark that prints figures, never a test)."""


import json
import logging
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Union

from edge.config import MqttConfig
from edge.errors import FallEdgeError
from edge.mqtt import topics
from edge.mqtt.connection import make_client, set_callbacks
from edge.mqtt.outbox import Outbox
from edge.mqtt.publisher import MqttPublisher

logger = logging.getLogger(__name__)

_PACED_EVENTS = 200
_PACED_RATE_PER_S = 100.0


def run_mqtt_bench(config: MqttConfig, count: int) -> Dict[str, Union[str, float, int]]:
    """A burst of `count` events (throughput), then 200 events at 100/s (latency, no queueing)."""
    device = f"bench-{uuid.uuid4().hex[:8]}"
    config = replace(config, device=device)  # the caller's config stays as it was
    received: Dict[str, List[float]] = {"burst": [], "paced": []}
    expected = {"burst": count, "paced": _PACED_EVENTS}
    finished = {"burst": threading.Event(), "paced": threading.Event()}
    subscribed = threading.Event()

    subscriber = make_client(config, f"{device}-sub")

    def on_connect(client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure:
            client.subscribe(topics.events_topic(config.prefix, device, "bench"), qos=1)

    def on_message(client, userdata, message):
        payload = json.loads(message.payload)
        phase = payload["phase"]
        received[phase].append((time.time() - payload["created"]) * 1000.0)
        if len(received[phase]) >= expected[phase]:
            finished[phase].set()

    set_callbacks(subscriber, on_connect=on_connect, on_message=on_message)
    subscriber.on_subscribe = lambda *args: subscribed.set()  # any signature
    subscriber.connect_async(config.host, config.port)
    subscriber.loop_start()

    def send(publisher: MqttPublisher, phase: str, index: int) -> None:
        publisher.send_event("bench", {"event_id": str(uuid.uuid4()), "type": "alarm", "phase": phase,
                                       "index": index, "created": time.time()})

    with tempfile.TemporaryDirectory(prefix="fall-edge-bench-") as tmp:
        outbox = Outbox(Path(tmp) / "outbox.sqlite", max_events=count + _PACED_EVENTS + 10)
        publisher = MqttPublisher(config, outbox)
        publisher.start()
        try:
            if not subscribed.wait(10) or not publisher.wait_connected(10):
                raise FallEdgeError(f"cannot reach the broker at {config.host}:{config.port}")
            logger.info(f"burst: {count} events ...")
            started = time.perf_counter()
            for index in range(count):
                send(publisher, "burst", index)
            stored = time.perf_counter()
            finished["burst"].wait(timeout=60 + count / 100)
            burst_done = time.perf_counter()
            logger.info(f"paced: {_PACED_EVENTS} events at {_PACED_RATE_PER_S:.0f}/s ...")
            for index in range(_PACED_EVENTS):
                send(publisher, "paced", index)
                time.sleep(1.0 / _PACED_RATE_PER_S)
            finished["paced"].wait(timeout=30)
        finally:
            publisher.stop()
            subscriber.disconnect()
            subscriber.loop_stop()
            outbox.close()
    burst = sorted(received["burst"]) or [float("nan")]
    paced = sorted(received["paced"]) or [float("nan")]

    def p99(values: List[float]) -> float:
        return round(values[min(len(values) - 1, int(0.99 * len(values)))], 2)

    report: Dict[str, Union[str, float, int]] = {
        "events": count,
        "received": len(received["burst"]),
        "store_rate_per_s": round(count / max(stored - started, 1e-9), 1),
        "throughput_per_s": round(len(received["burst"]) / max(burst_done - started, 1e-9), 1),
        "burst_latency_median_ms": round(statistics.median(burst), 2),
        "latency_median_ms": round(statistics.median(paced), 2),
        "latency_p99_ms": p99(paced),
        "paced_received": len(received["paced"]),
    }
    report["text"] = (
        f"burst: {report['received']}/{count} events through the outbox to {config.host}:{config.port} at "
        f"{report['throughput_per_s']} events/s end to end (stored at {report['store_rate_per_s']}/s; "
        f"median latency under the burst {report['burst_latency_median_ms']} ms)\n"
        f"paced ({_PACED_RATE_PER_S:.0f}/s): {report['paced_received']}/{_PACED_EVENTS} events, creation to "
        f"subscriber latency median {report['latency_median_ms']} ms, p99 {report['latency_p99_ms']} ms")
    return report

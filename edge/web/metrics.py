"""/metrics: the health report in Prometheus' text format (prometheus_client renders it), read at
scrape time from the latest report, so a device nobody scrapes does no work for it."""


from typing import Callable, Dict, Iterator

from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

PREFIX = "fall_edge"


class HealthCollector:
    """One scrape: the numbers of the latest health report (edge/daemon/router.py health())."""

    def __init__(self, health: Callable[[], Dict[str, object]]) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        report = self.health()
        if not report:  # the first report comes after the first processed frame
            return
        yield _gauge("uptime_seconds", "Seconds since the daemon started", report.get("uptime_s", 0))
        yield _counter("frames_processed", "Frames the pipeline processed", report.get("frames_processed", 0))
        yield _counter("dropped_frames", "Live frames replaced by newer ones before the pipeline took them",
                       report.get("dropped_frames", 0))
        stage_fps = GaugeMetricFamily(f"{PREFIX}_stage_fps", "Calls per second each stage could sustain "
                                                              "(1000 / its recent mean time)", labels=["stage"])
        for stage, fps in sorted(_mapping(report.get("stage_fps")).items()):
            stage_fps.add_metric([stage], float(fps))
        yield stage_fps
        events = CounterMetricFamily(f"{PREFIX}_events", "Events sent, by type", labels=["type"])
        for kind, count in sorted(_mapping(report.get("events")).items()):
            events.add_metric([kind], float(count))
        yield events
        yield _gauge("tracks", "People tracked now", report.get("tracks", 0))
        yield _gauge("outbox_depth", "Events stored and not yet delivered to the broker",
                     report.get("outbox_depth", 0))
        yield _gauge("outbox_memory", "Events held in memory only (the outbox file cannot be written now)",
                     report.get("outbox_memory", 0))
        yield _counter("outbox_dropped", "Events dropped from a full outbox", report.get("outbox_dropped", 0))
        yield _counter("mqtt_outages", "Times the broker connection was lost", report.get("mqtt_outages", 0))
        yield _counter("commands_refused", "Commands from the network refused (unsigned, malformed, replayed)",
                       report.get("commands_refused", 0))
        yield _counter("commands_failed", "Accepted commands whose handler failed", report.get("commands_failed", 0))
        outages = CounterMetricFamily(f"{PREFIX}_camera_outages", "Times a camera stopped sending frames",
                                      labels=["camera"])
        restarts = CounterMetricFamily(f"{PREFIX}_camera_restarts", "Times a camera's pipeline was restarted",
                                       labels=["camera"])
        rates = GaugeMetricFamily(f"{PREFIX}_camera_processed_fps", "Frames a second each camera had processed "
                                                                     "over the last seconds (several cameras)",
                                  labels=["camera"])
        shed = GaugeMetricFamily(f"{PREFIX}_camera_shed_level", "Steps of work shed to keep every camera at "
                                                                "output.min_process_fps (0: none)", labels=["camera"])
        for camera, stats in sorted(_mapping(report.get("cameras")).items()):
            stats = _mapping(stats)
            outages.add_metric([camera], float(stats.get("outages", 0)))
            restarts.add_metric([camera], float(stats.get("restarts", 0)))
            if "processed_fps" in stats:
                rates.add_metric([camera], float(stats["processed_fps"]))  # type: ignore[arg-type]
                shed.add_metric([camera], float(stats.get("shed_level", 0)))  # type: ignore[arg-type]
        yield outages
        yield restarts
        yield rates
        yield shed
        problems = GaugeMetricFamily(f"{PREFIX}_alarm_part_broken", "1 while a part of the local alarm "
                                                                   "(buzzer, speech) does not work", labels=["part"])
        for part in sorted(_mapping(report.get("alarm_problems"))):
            problems.add_metric([part], 1.0)
        yield problems
        temperatures = GaugeMetricFamily(f"{PREFIX}_temperature_celsius", "Thermal zones", labels=["zone"])
        for zone, celsius in sorted(_mapping(report.get("temperatures_c")).items()):
            temperatures.add_metric([zone], float(celsius))
        yield temperatures


def _mapping(value: object) -> Dict[str, object]:
    return value if isinstance(value, dict) else {}


def _gauge(name: str, text: str, value: object) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", text, value=float(value))  # type: ignore[arg-type]


def _counter(name: str, text: str, value: object) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", text, value=float(value))  # type: ignore[arg-type]


def metrics_text(health: Callable[[], Dict[str, object]]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(health))  # type: ignore[arg-type]
    return generate_latest(registry)


__all__ = ["CONTENT_TYPE_LATEST", "metrics_text"]

"""Per-stage timing summaries of the pipeline: `run --profile` prints them, `bench` reports them."""


import statistics
from typing import Dict, Mapping, Sequence


def timing_stats(values: Sequence[float]) -> Dict[str, float]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
        "mean_ms": round(statistics.mean(ordered), 2),
    }


def format_timings(timings: Mapping[str, Sequence[float]]) -> str:
    lines = [f"{'stage':<12} {'calls':>6} {'median ms':>10} {'p90 ms':>8} {'mean ms':>8}"]
    for stage, values in timings.items():
        if values:
            s = timing_stats(values)
            lines.append(f"{stage:<12} {s['count']:>6} {s['median_ms']:>10.2f} {s['p90_ms']:>8.2f} "
                         f"{s['mean_ms']:>8.2f}")
    return "\n".join(lines)

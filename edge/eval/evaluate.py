"""Score the pipeline on labelled clips: per-clip result, precision, recall, F1, delay."""

from __future__ import annotations

import csv
import logging
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from edge.capture.opencv_source import VideoSource
from edge.config import Config
from edge.daemon.pipeline import FallPipeline
from edge.daemon.runner import Models, process_video
from edge.errors import FallEdgeError

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}
EARLY_TOLERANCE_S = 1.0  # an event more than this before the labelled fall start is a false alarm


@dataclass
class ClipLabel:
    file: str
    fall: bool
    fall_start_s: Optional[float]


@dataclass
class ClipResult:
    file: str
    label: str  # fall | nofall
    fall_start_s: Optional[float]
    detected: bool  # a fall event in time on a fall clip
    false_alarm: bool  # a fall event on a nofall clip, or too early on a fall clip
    first_event_s: Optional[float]
    delay_s: Optional[float]  # first in-time event minus the labelled fall start
    alarm_s: Optional[float]  # first `alarm` event (still down after the hold)
    events: List[Dict[str, object]] = field(default_factory=list)


@dataclass
class Summary:
    clips: int
    falls: int
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float
    median_delay_s: Optional[float]


def read_labels(path: Path) -> Dict[str, ClipLabel]:
    """A TSV with file, label (fall|nofall) and fall start seconds; extra columns are ignored
    (so ../shared/clips/MANIFEST.tsv works as it is)."""
    if not path.is_file():
        raise FallEdgeError(f"labels file {path} not found: pass --labels with a TSV of file, label, fall_start_s")
    labels: Dict[str, ClipLabel] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    if not rows:
        raise FallEdgeError(f"labels file {path} is empty: add a header and one row per clip")
    header = [cell.strip().lower() for cell in rows[0]]
    has_header = "file" in header
    columns = {name: header.index(name) for name in header} if has_header else {"file": 0, "label": 1,
                                                                                  "fall_start_s": 2}
    for name in ("file", "label"):
        if name not in columns:
            raise FallEdgeError(f"labels file {path} has no '{name}' column: "
                                f"the header needs file, label, fall_start_s")
    start_col = columns.get("fall_start_s", 2)
    for line_no, row in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        if not row or not row[0].strip() or row[0].startswith("#"):
            continue
        label = row[columns["label"]].strip().lower() if len(row) > columns["label"] else ""
        if label not in ("fall", "nofall"):
            raise FallEdgeError(f"labels file {path} line {line_no}: label must be fall or nofall, got '{label}'")
        start_text = row[start_col].strip() if len(row) > start_col else ""
        start: Optional[float] = None
        if label == "fall":
            try:
                start = float(start_text)
            except ValueError:
                raise FallEdgeError(f"labels file {path} line {line_no}: a fall needs its start in seconds, "
                                    f"got '{start_text}'") from None
        labels[row[columns["file"]].strip()] = ClipLabel(row[columns["file"]].strip(), label == "fall", start)
    return labels


def find_labels(clips_dir: Path, labels_path: Optional[Path]) -> Dict[str, ClipLabel]:
    if labels_path is not None:
        return read_labels(labels_path)
    for name in ("labels.tsv", "MANIFEST.tsv"):
        if (clips_dir / name).is_file():
            return read_labels(clips_dir / name)
    raise FallEdgeError(f"no labels for {clips_dir}: add labels.tsv (file, label, fall_start_s) or pass --labels")


def score_clip(label: ClipLabel, events: List[Dict[str, object]]) -> ClipResult:
    falls = [e for e in events if e["type"] in ("fall_detected", "alarm")]
    first = min((float(e["stream_time_s"]) for e in falls), default=None)
    alarm = min((float(e["stream_time_s"]) for e in events if e["type"] == "alarm"), default=None)
    detected, false_alarm, delay = False, False, None
    if label.fall:
        assert label.fall_start_s is not None
        early = [e for e in falls if float(e["stream_time_s"]) < label.fall_start_s - EARLY_TOLERANCE_S]
        in_time = [float(e["stream_time_s"]) for e in falls if e not in early]
        false_alarm = bool(early)
        if in_time:
            detected = True
            delay = round(min(in_time) - label.fall_start_s, 3)
    else:
        false_alarm = bool(falls)
    return ClipResult(file=label.file, label="fall" if label.fall else "nofall", fall_start_s=label.fall_start_s,
                      detected=detected, false_alarm=false_alarm, first_event_s=first, delay_s=delay,
                      alarm_s=alarm, events=events)


def summarise(results: List[ClipResult]) -> Summary:
    tp = sum(r.detected for r in results)
    fp = sum(r.false_alarm for r in results)
    fn = sum(1 for r in results if r.label == "fall" and not r.detected)
    precision = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    delays = [r.delay_s for r in results if r.delay_s is not None]
    return Summary(clips=len(results), falls=sum(r.label == "fall" for r in results), true_positives=tp,
                   false_positives=fp, false_negatives=fn, precision=round(precision, 3),
                   recall=round(recall, 3), f1=round(f1, 3),
                   median_delay_s=round(statistics.median(delays), 3) if delays else None)


def evaluate(config: Config, models: Models, clips_dir: Path, labels: Dict[str, ClipLabel],
             pad_end_s: float) -> List[ClipResult]:
    if not clips_dir.is_dir():
        raise FallEdgeError(f"clips folder {clips_dir} not found: pass a folder of videos")
    videos = sorted(p for p in clips_dir.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    unlabelled = [p.name for p in videos if p.name not in labels]
    if unlabelled:
        logger.warning("no label for %s; skipped", ", ".join(unlabelled))
    videos = [p for p in videos if p.name in labels]
    if not videos:
        raise FallEdgeError(f"no labelled videos in {clips_dir}: check the labels' file names")
    results: List[ClipResult] = []
    for number, video_path in enumerate(videos, start=1):
        sys.stderr.write(f"[{number}/{len(videos)}] {video_path.name} ...\n")
        sys.stderr.flush()
        pipeline = FallPipeline(config, models.pose, models.detector, camera=video_path.stem)
        with VideoSource(str(video_path), pad_end_s=pad_end_s) as video:
            events = [e.to_dict() for result in process_video(pipeline, video, config.output.process_fps)
                      for e in result.events]
        results.append(score_clip(labels[video_path.name], events))
    return results


def format_table(results: List[ClipResult], summary: Summary) -> str:
    def cell(value: Optional[float]) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [f"{'clip':<28} {'label':<6} {'start':>6} {'result':<12} {'first':>6} {'delay':>6} {'alarm':>6}"]
    for r in results:
        if r.label == "fall":
            outcome = "detected" if r.detected else "MISSED"
            if r.false_alarm:
                outcome += "+early"
        else:
            outcome = "FALSE ALARM" if r.false_alarm else "ok"
        lines.append(f"{r.file:<28} {r.label:<6} {cell(r.fall_start_s):>6} {outcome:<12} "
                     f"{cell(r.first_event_s):>6} {cell(r.delay_s):>6} {cell(r.alarm_s):>6}")
    lines.append(
        f"precision {summary.precision:.3f}  recall {summary.recall:.3f}  f1 {summary.f1:.3f}  "
        f"median delay {cell(summary.median_delay_s)} s  "
        f"(TP {summary.true_positives}, FP {summary.false_positives}, FN {summary.false_negatives})"
    )
    return "\n".join(lines)


def results_json(results: List[ClipResult], summary: Summary) -> Dict[str, object]:
    return {"clips": [asdict(r) for r in results], "summary": asdict(summary)}

"""Score the pipeline on labelled clips: per-clip result, precision, recall, F1, delay."""


import csv
import functools
import logging
import multiprocessing
import os
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from tqdm import tqdm

from edge.backends import create_backend
from edge.capture.opencv_source import OpenCvSource
from edge.config import Config
from edge.daemon.pipeline import FallPipeline
from edge.daemon.runner import Models, VideoWriterSink, load_models, process_frames
from edge.errors import FallEdgeError
from edge.eval.compare import matches_only, outcome_text
from edge.eval.variants import VariantPlan, needs_sketch, plan_variant, select_frames, sketch_clip, transform_frame
from edge.perception.output_cache import OutputCache, fingerprint
from edge.perception.sequence import SequenceScorer
from edge.types import EventType
from edge.viz.trace import TraceWriter

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}
EARLY_TOLERANCE_S = 1.0  # an event more than this before the labelled fall start is a false alarm


@dataclass
class ClipLabel:
    file: str
    fall: bool
    fall_start_s: Optional[float]
    source: str = ""  # where the clip comes from (source_repo, else its folder): leave-one-source-out


def source_key(source: str) -> str:
    """A source as a file name: scripts/train_sequence.py writes DIR/<key>.onnx per held-out source."""
    return source.replace("/", "__")


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
    variant: str = "plain"
    note: str = ""  # what a variant could not do on this clip
    folder: str = ""  # the clips folder's name (results are summarised per folder too)
    duration_s: float = 0.0  # footage played, as the variant shows it (the padded end not counted)
    cache_hits: int = 0  # model calls answered from the output cache ...
    cache_misses: int = 0  # ... and those the models ran


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
    everyday_s: float = 0.0  # total duration of the nofall clips ...
    everyday_false_alarms: int = 0  # ... the false alarms raised on them ...
    false_alarms_per_hour: Optional[float] = None  # ... and their rate (None without everyday footage)


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
    source_col = columns.get("source_repo")
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
        source = row[source_col].strip() if source_col is not None and len(row) > source_col else ""
        labels[row[columns["file"]].strip()] = ClipLabel(row[columns["file"]].strip(), label == "fall", start,
                                                         source or path.parent.name)
    return labels


def find_labels(clips_dir: Path, labels_path: Optional[Path]) -> Dict[str, ClipLabel]:
    if labels_path is not None:
        return read_labels(labels_path)
    for name in ("labels.tsv", "MANIFEST.tsv"):
        if (clips_dir / name).is_file():
            return read_labels(clips_dir / name)
    raise FallEdgeError(f"no labels for {clips_dir}: add labels.tsv (file, label, fall_start_s) or pass --labels")


def score_clip(label: ClipLabel, events: List[Dict[str, object]]) -> ClipResult:
    falls = [e for e in events if EventType(e["type"]).opens_alarm]
    first = min((float(e["stream_time_s"]) for e in falls), default=None)
    alarm = min((float(e["stream_time_s"]) for e in events if e["type"] == EventType.ALARM), default=None)
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
    # Deployed systems are judged by false alarms per hour of ordinary life: the nofall clips'
    # alarms over their footage (an early event on a fall clip counts in FP, not here).
    everyday = [r for r in results if r.label == "nofall"]
    everyday_s = sum(r.duration_s for r in everyday)
    everyday_fp = sum(r.false_alarm for r in everyday)
    return Summary(clips=len(results), falls=sum(r.label == "fall" for r in results), true_positives=tp,
                   false_positives=fp, false_negatives=fn, precision=round(precision, 3),
                   recall=round(recall, 3), f1=round(f1, 3),
                   median_delay_s=round(statistics.median(delays), 3) if delays else None,
                   everyday_s=round(everyday_s, 1), everyday_false_alarms=everyday_fp,
                   false_alarms_per_hour=round(everyday_fp * 3600.0 / everyday_s, 2) if everyday_s > 0 else None)


@dataclass(frozen=True)
class EvalJob:
    """One clip under one variant."""

    clip: Path
    label: ClipLabel
    variant: str = "plain"

    @property
    def name(self) -> str:
        return self.clip.stem if self.variant == "plain" else f"{self.clip.stem}.{self.variant}"


@dataclass
class EvalOptions:
    pad_end_s: float = 6.0
    cache_dir: Optional[Path] = None  # model outputs kept here between runs (perception/output_cache.py)
    trace_dir: Optional[Path] = None  # one JSON-lines trace per clip and variant
    video_dir: Optional[Path] = None  # one drawn video per clip and variant
    # Leave-one-source-out: each clip's sequence cue is DIR/<source_key(its source)>.onnx, a model
    # trained without that source (scripts/train_sequence.py --loso DIR).
    sequence_loso: Optional[Path] = None


def list_jobs(clip_dirs: Sequence[Path], labels_path: Optional[Path], variants: Sequence[str]) -> List[EvalJob]:
    """Every labelled clip of every folder, under every variant (plain first)."""
    if labels_path is not None and len(clip_dirs) > 1:
        raise FallEdgeError("--labels names one folder's labels: give one clips folder with it, "
                            "or put a MANIFEST.tsv in each folder")
    jobs: List[EvalJob] = []
    seen: Dict[str, Path] = {}
    for clips_dir in clip_dirs:
        if not clips_dir.is_dir():
            raise FallEdgeError(f"clips folder {clips_dir} not found: pass a folder of videos")
        labels = find_labels(clips_dir, labels_path)
        videos = sorted(p for p in clips_dir.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        unlabelled = [p.name for p in videos if p.name not in labels]
        if unlabelled:
            logger.warning("no label for %s; skipped", ", ".join(unlabelled))
        videos = [p for p in videos if p.name in labels]
        if not videos:
            raise FallEdgeError(f"no labelled videos in {clips_dir}: check the labels' file names")
        for video in videos:
            if video.name in seen:
                raise FallEdgeError(f"clip {video.name} is in both {seen[video.name].parent} and {clips_dir}: "
                                    f"rename one, results are reported by file name")
            seen[video.name] = video
            jobs += [EvalJob(video, labels[video.name], variant) for variant in variants]
    return jobs


def select_jobs(jobs: Sequence[EvalJob], only: Sequence[str] = (),
                cases: Optional[Set[Tuple[str, str]]] = None) -> List[EvalJob]:
    """--only GLOB (any of them matches the file name, its stem or 'stem.variant') and
    --rerun-failures (only the (file, variant) cases given)."""
    chosen = [j for j in jobs if (not only or matches_only(j.clip.name, j.variant, only))
              and (cases is None or (j.clip.name, j.variant) in cases)]
    if not chosen:
        what = f"--only {' '.join(only)}" if only else "--rerun-failures"
        raise FallEdgeError(f"{what} selects no clip: check the names (a glob on the file name, its stem "
                            f"or stem.variant, e.g. 'upfall_*' or '*.dim')")
    return chosen


def plan_job(job: EvalJob, models: Models) -> VariantPlan:
    """What the job's variant does to its clip (a pass over the clip for small and occlude)."""
    detector = models.detector
    fall_class_id = detector.fall_class_id if detector is not None else -1

    def detect(image):
        return detector.detect(image) if detector is not None else []

    sketch = None
    with OpenCvSource(str(job.clip)) as video:
        duration = video.frame_count / video.fps if video.frame_count else 0.0
        if needs_sketch(job.variant):
            sketch = sketch_clip(video.frames(), video.fps, job.label.fall_start_s, video.frame_count)
            duration = sketch.duration_s
    return plan_variant(job.variant, sketch, duration, job.label.fall_start_s, detect, fall_class_id)


def _cache_stats(models: Models) -> Tuple[int, int]:
    caches = [m.output_cache for m in (models.pose, models.detector) if m is not None and m.output_cache is not None]
    return sum(c.hits for c in caches), sum(c.misses for c in caches)


def run_job(job: EvalJob, config: Config, models: Models, options: EvalOptions) -> ClipResult:
    """Run the pipeline over one clip (as its variant shows it) and score the events."""
    hits_before, misses_before = _cache_stats(models)
    plan = plan_job(job, models)
    sequence = models.sequence
    if options.sequence_loso is not None and config.sequence.enabled:
        sequence = _held_out_scorer(config, options.sequence_loso, job.label.source)
    pipeline = FallPipeline(config, models.pose, models.detector, sequence=sequence, camera=job.clip.stem)
    sinks = []
    if options.trace_dir is not None:
        sinks.append(TraceWriter(options.trace_dir, job.name, config.pose.min_keypoint_score))
    if options.video_dir is not None:
        sinks.append(VideoWriterSink(options.video_dir / f"{job.name}.mp4", config.output.process_fps or 10.0))
    events: List[Dict[str, object]] = []
    try:
        with OpenCvSource(str(job.clip), pad_end_s=options.pad_end_s) as video:
            frames = select_frames(plan, video.frames())
            prepare = functools.partial(transform_frame, plan)
            for result in process_frames(pipeline, frames, config.output.process_fps, prepare):
                events += [e.to_dict() for e in result.events]
                for sink in sinks:
                    sink(result)
            frames_read, fps = video.frames_read, video.fps
    finally:
        for sink in sinks:
            sink.close()
    label = ClipLabel(job.label.file, job.label.fall, plan.label_start(job.label.fall_start_s))
    result = score_clip(label, events)
    result.variant, result.note, result.folder = job.variant, plan.note, job.clip.parent.name
    result.duration_s = round(played_duration_s(plan, frames_read, fps), 2)
    hits, misses = _cache_stats(models)
    result.cache_hits, result.cache_misses = hits - hits_before, misses - misses_before
    return result


_HELD_OUT: Dict[str, SequenceScorer] = {}


def _held_out_scorer(config: Config, folder: Path, source: str) -> SequenceScorer:
    path = folder / f"{source_key(source)}.onnx"
    if str(path) not in _HELD_OUT:
        if not path.is_file():
            raise FallEdgeError(f"--sequence-loso {folder} has no model for source {source!r} ({path.name}): "
                                f"run scripts/train_sequence.py --loso {folder} on the same folders")
        _HELD_OUT[str(path)] = SequenceScorer(create_backend(config.sequence.type, path, config.sequence.threads))
    return _HELD_OUT[str(path)]


def played_duration_s(plan: VariantPlan, frames_read: int, fps: float) -> float:
    """The clip's footage as its variant plays it: cut drops the start; drop keeps the clock."""
    return max(0.0, frames_read / fps - plan.cut_start_s) if fps > 0 else 0.0


def attach_output_cache(models: Models, cache_dir: Optional[Path]) -> None:
    if cache_dir is None:
        return
    models.pose.output_cache = OutputCache(cache_dir, fingerprint(models.pose.cache_identity()))
    if models.detector is not None:
        models.detector.output_cache = OutputCache(cache_dir, fingerprint(models.detector.cache_identity()))


# A worker process's models and settings (spawned workers load their own: model sessions do
# not survive a fork safely).
_WORKER: Dict[str, object] = {}


def _worker_init(config: Config, options: EvalOptions) -> None:
    logging.getLogger().setLevel(logging.WARNING)
    models = load_models(config)
    attach_output_cache(models, options.cache_dir)
    _WORKER.update(config=config, models=models, options=options)


def _worker_run(job: EvalJob) -> ClipResult:
    models = _WORKER["models"]
    assert isinstance(models, Models)
    return run_job(job, _WORKER["config"], models, _WORKER["options"])  # type: ignore[arg-type]


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def evaluate(config: Config, eval_jobs: Sequence[EvalJob], options: EvalOptions, jobs: int = 1,
             models: Optional[Models] = None) -> List[ClipResult]:
    """Run every job, `jobs` at a time (worker processes, each with its share of the CPU
    threads); results come back in the order of eval_jobs."""
    results: Dict[int, ClipResult] = {}
    # The longest clips first, so parallel workers finish together.
    order = sorted(range(len(eval_jobs)), key=lambda i: -eval_jobs[i].clip.stat().st_size)
    with tqdm(total=len(eval_jobs), unit="clip", desc="eval", file=sys.stderr, dynamic_ncols=True) as progress:
        if jobs <= 1:
            if models is None:
                models = load_models(config)
                attach_output_cache(models, options.cache_dir)
            for index in order:
                progress.set_postfix_str(eval_jobs[index].name, refresh=True)
                results[index] = run_job(eval_jobs[index], config, models, options)
                progress.update()
        else:
            threads = threads_per_job(jobs)
            worker_config = replace(config, detector=replace(config.detector, threads=threads),
                                    pose=replace(config.pose, threads=threads))
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_worker_init,
                                     initargs=(worker_config, options)) as pool:
                futures = {pool.submit(_worker_run, eval_jobs[index]): index for index in order}
                try:
                    for future in as_completed(futures):
                        index = futures[future]
                        results[index] = future.result()
                        progress.set_postfix_str(eval_jobs[index].name, refresh=False)
                        progress.update()
                except BaseException:
                    for future in futures:  # one failure stops the run: nothing more is started
                        future.cancel()
                    raise
    return [results[i] for i in range(len(eval_jobs))]


def _cell(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(results: List[ClipResult], summary: Summary) -> str:
    """One variant: a row per clip with its first event, delay and alarm."""
    width = max([28] + [len(r.file) for r in results])
    lines = [f"{'clip':<{width}} {'label':<6} {'start':>6} {'result':<12} {'first':>6} {'delay':>6} {'alarm':>6}"]
    for r in results:
        lines.append(f"{r.file:<{width}} {r.label:<6} {_cell(r.fall_start_s):>6} {outcome(r):<12} "
                     f"{_cell(r.first_event_s):>6} {_cell(r.delay_s):>6} {_cell(r.alarm_s):>6}")
    lines.append(summary_line(summary))
    lines += folder_lines(results)
    return "\n".join(lines)


def outcome(result: ClipResult) -> str:
    return outcome_text(result.label, result.detected, result.false_alarm)


def summary_line(summary: Summary) -> str:
    return (f"precision {summary.precision:.3f}  recall {summary.recall:.3f}  f1 {summary.f1:.3f}  "
            f"median delay {_cell(summary.median_delay_s)} s  "
            f"(TP {summary.true_positives}, FP {summary.false_positives}, FN {summary.false_negatives})  "
            + everyday_text(summary))


def everyday_text(summary: Summary) -> str:
    """'false alarms 2 in 26.1 min of everyday footage (4.60/h)'."""
    if summary.false_alarms_per_hour is None:
        return "no everyday footage"
    return (f"false alarms {summary.everyday_false_alarms} in {summary.everyday_s / 60.0:.1f} min of everyday "
            f"footage ({summary.false_alarms_per_hour:.2f}/h)")


def by_folder(results: List[ClipResult]) -> Dict[str, List[ClipResult]]:
    grouped: Dict[str, List[ClipResult]] = {}
    for result in results:
        grouped.setdefault(result.folder, []).append(result)
    return grouped


def folder_lines(results: List[ClipResult], prefix: str = "") -> List[str]:
    """One summary line per clips folder, when there are several."""
    grouped = by_folder(results)
    if len(grouped) < 2:
        return []
    width = max(len(name) for name in grouped)
    return [f"{prefix}{name:<{width}} {len(rows):>4} clips  " + summary_line(summarise(rows))
            for name, rows in grouped.items()]


def by_variant(results: List[ClipResult]) -> Dict[str, List[ClipResult]]:
    grouped: Dict[str, List[ClipResult]] = {}
    for result in results:
        grouped.setdefault(result.variant, []).append(result)
    return grouped


def _variant_cell(result: ClipResult) -> str:
    """'0.85' (delay of a detected fall), 'MISS', 'ok', 'FA 3.2' (false alarm at 3.2 s)."""
    if result.label == "fall":
        text = _cell(result.delay_s) if result.detected else "MISS"
        return text + "!" if result.false_alarm else text
    return f"FA {result.first_event_s:.1f}" if result.false_alarm else "ok"


def format_variant_table(results: List[ClipResult]) -> str:
    """Several variants: a row per clip, a column per variant, a summary line per variant."""
    grouped = by_variant(results)
    names = list(grouped)
    rows: Dict[str, Dict[str, ClipResult]] = {}
    for result in results:
        rows.setdefault(result.file, {})[result.variant] = result
    width = max([28] + [len(name) for name in rows])
    lines = [f"{'clip':<{width}} {'label':<6} {'start':>6} " + " ".join(f"{n:>8}" for n in names)]
    for file, cells in rows.items():
        first = next(iter(cells.values()))
        start = first.fall_start_s if first.variant != "cut" else None
        lines.append(f"{file:<{width}} {first.label:<6} {_cell(start):>6} "
                     + " ".join(f"{_variant_cell(cells[n]) if n in cells else '':>8}" for n in names))
    lines.append("(fall clips: delay in s from the labelled start, MISS, '!' an event over 1 s early; "
                 "nofall clips: ok or FA at the first event's time)")
    for name in names:
        lines.append(f"{name:<8} " + summary_line(summarise(grouped[name])))
    for name in names:
        lines += folder_lines(grouped[name], prefix=f"{name:<8} ")
    notes = [f"{r.file} [{r.variant}]: {r.note}" for r in results if r.note]
    lines += ["notes:"] + [f"  {n}" for n in notes] if notes else []
    return "\n".join(lines)


def cache_line(results: Sequence[ClipResult], cache_dir: Optional[Path], size_bytes: int) -> str:
    hits, misses = sum(r.cache_hits for r in results), sum(r.cache_misses for r in results)
    if cache_dir is None:
        return "model cache off (--no-cache): every model call ran"
    share = 100.0 * hits / (hits + misses) if hits + misses else 0.0
    return (f"model cache {cache_dir}: {hits} hits, {misses} misses ({share:.1f}% from the cache), "
            f"{size_bytes / 2**20:.0f} MB on disk")


def format_report(results: List[ClipResult]) -> str:
    grouped = by_variant(results)
    if len(grouped) == 1:
        only = next(iter(grouped.values()))
        return format_table(only, summarise(only))
    return format_variant_table(results)


def results_json(results: List[ClipResult], summary: Optional[Summary] = None,
                 meta: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """The plain variant (or the only one) at the top level, every variant under "variants";
    meta says what it was measured with (compare.run_metadata)."""
    grouped = by_variant(results)
    main = grouped.get("plain") or next(iter(grouped.values()))
    def per_folder(rows: List[ClipResult]) -> Dict[str, object]:
        return {name: asdict(summarise(group)) for name, group in by_folder(rows).items()}

    report: Dict[str, object] = {"meta": meta or {}, "clips": [asdict(r) for r in main],
                                 "summary": asdict(summary or summarise(main)), "folders": per_folder(main)}
    if len(grouped) > 1:
        report["variants"] = {name: {"clips": [asdict(r) for r in rows], "summary": asdict(summarise(rows)),
                                     "folders": per_folder(rows)}
                              for name, rows in grouped.items()}
    return report

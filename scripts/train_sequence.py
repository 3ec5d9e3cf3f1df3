#!/usr/bin/env python3
"""Train the learned sequence cue (a small GRU over two seconds of a track's skeletons) from the
development folders, evaluate it leave-one-source-out, and export it to ONNX.

    .venv/bin/fall-edge eval ../shared/clips ../shared/clips-extra ../shared/clips-wild --jobs 2 \\
        --config configs/train-sequence.yaml --trace var/sequence-traces
    .venv/bin/python scripts/train_sequence.py --traces var/sequence-traces \\
        ../shared/clips ../shared/clips-extra ../shared/clips-wild

The traces hold every processed frame's skeletons per track (`kp`), exactly as the pipeline saw
them, so the windows trained on are the windows the daemon scores (configs/train-sequence.yaml:
the pipeline without the cue itself, so the traces do not depend on an earlier model). Labels come from the
folders' MANIFEST.tsv: in a fall clip, the track whose hips dropped most around the labelled
start is the person who fell; its windows ending 0.6-3.0 s after the start are "a fall in this
window" (1), every window of a nofall clip and every window ending before the start is 0, and
the rest (the person lying afterwards, helpers) is left out: lying still after a fall looks
like lying down on purpose, and telling those apart by how the person got there is the point.

--loso DIR trains one model per source with that source's clips left out and scores the
held-out windows with it (the per-source table), and writes each model to DIR/<source>.onnx so
`fall-edge eval --sequence-loso DIR` can score the events honestly. Without --loso it trains
on everything and writes models/fall_sequence.onnx with models/fall_sequence.json (the training
manifest: the clips, the traces' sha256, the settings and the model's sha256). Training is
seeded and single-threaded: the same traces give the same model bit for bit on one machine
(across CPUs and torch versions, scores agree within 1e-4; the manifest records both).
"""

import argparse
import csv
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.eval.evaluate import source_key  # noqa: E402
from edge.fall.sequence import (  # noqa: E402
    FEATURES,
    MIRROR_PAIRS,
    STEP_S,
    WINDOW_FRAMES,
    resample,
    window_features,
)
from edge.types import KEYPOINT_INDEX  # noqa: E402

logger = logging.getLogger("train_sequence")

MIN_KEYPOINT_SCORE = 0.2  # pose.min_keypoint_score's default: the pipeline's own rule
POSITIVE_FROM_S, POSITIVE_TO_S = 0.6, 3.0  # after the labelled start: the fall is inside the window
NEGATIVE_BEFORE_S = 0.3  # windows ending this long before the start are ordinary life
MIN_SEEN_STEPS = 6  # a window needs this many steps with a skeleton
SPEEDS = (0.75, 1.0, 1.33)  # the same motion slower and faster (other people, other frame rates)
HIDDEN = 32
BATCH = 8  # the exported model's fixed batch: tracks scored per call
EPOCHS = 10
NEGATIVE_SHARE = 0.33  # of the everyday windows, seen each epoch (neighbouring windows overlap by 95%)
SEED = 20261206
_HIPS = (KEYPOINT_INDEX["left_hip"], KEYPOINT_INDEX["right_hip"])


@dataclass
class Clip:
    file: str
    folder: str
    source: str
    fall: bool
    fall_start_s: Optional[float]


@dataclass
class Windows:
    features: np.ndarray  # (N, WINDOW_FRAMES, FEATURES)
    labels: np.ndarray  # (N,) 0/1
    clip_index: np.ndarray  # (N,) into the clip list
    end_s: np.ndarray  # (N,) the window's end on the clip's clock
    track: np.ndarray  # (N,)
    speed: np.ndarray  # (N,)


def read_clips(folders: Sequence[Path]) -> List[Clip]:
    clips = []
    for folder in folders:
        with (folder / "MANIFEST.tsv").open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                start = row["fall_start_s"].strip()
                source = (row.get("source_repo") or "").strip() or folder.name
                clips.append(Clip(row["file"].strip(), folder.name, source, row["label"].strip() == "fall",
                                  float(start) if row["label"].strip() == "fall" else None))
    return clips


def read_tracks(trace: Path) -> Dict[int, List[Tuple[float, np.ndarray]]]:
    """track id -> [(time, keypoints (18, 3))] for every frame with a fresh skeleton."""
    tracks: Dict[int, List[Tuple[float, np.ndarray]]] = {}
    with trace.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record.get("track") is None or "kp" not in record:
                continue
            tracks.setdefault(int(record["track"]), []).append((float(record["t"]),
                                                                np.array(record["kp"], np.float32)))
    return tracks


def hip_y(keypoints: np.ndarray) -> Optional[float]:
    hips = keypoints[list(_HIPS)]
    hips = hips[hips[:, 2] >= MIN_KEYPOINT_SCORE]
    return float(hips[:, 1].mean()) if len(hips) else None


def body_length(keypoints: np.ndarray) -> Optional[float]:
    confident = keypoints[keypoints[:, 2] >= MIN_KEYPOINT_SCORE, :2]
    if len(confident) < 4:
        return None
    return float(max(np.ptp(confident[:, 0]), np.ptp(confident[:, 1])))


def faller(tracks: Dict[int, List[Tuple[float, np.ndarray]]], start_s: float) -> Optional[int]:
    """The track whose hips dropped most (in body lengths) from just before the labelled start to
    the next three seconds: the person who fell."""
    best, best_drop = None, 0.2
    for track_id, samples in tracks.items():
        before = [hip_y(kp) for t, kp in samples if start_s - 1.0 <= t <= start_s + 0.2]
        after = [hip_y(kp) for t, kp in samples if start_s <= t <= start_s + POSITIVE_TO_S]
        lengths = [body_length(kp) for t, kp in samples if start_s - 1.0 <= t <= start_s + POSITIVE_TO_S]
        before, after = [y for y in before if y is not None], [y for y in after if y is not None]
        lengths = [v for v in lengths if v]
        if not before or not after or not lengths:
            continue
        drop = (max(after) - float(np.median(before))) / max(float(np.median(lengths)), 1.0)
        if drop > best_drop:
            best, best_drop = track_id, drop
    return best


def label_for(clip: Clip, is_faller: bool, end_s: float) -> Optional[int]:
    if not clip.fall:
        return 0
    assert clip.fall_start_s is not None
    if end_s < clip.fall_start_s - NEGATIVE_BEFORE_S:
        return 0
    if is_faller and clip.fall_start_s + POSITIVE_FROM_S <= end_s <= clip.fall_start_s + POSITIVE_TO_S:
        return 1
    return None


def build_windows(clips: List[Clip], traces: Path, speeds: Sequence[float] = SPEEDS) -> Windows:
    features, labels, clip_index, ends, track_ids, speed_of = [], [], [], [], [], []
    for index, clip in enumerate(clips):
        trace = traces / f"{Path(clip.file).stem}.jsonl"
        if not trace.is_file():
            logger.warning("no trace for %s in %s: run fall-edge eval --trace first", clip.file, traces)
            continue
        tracks = read_tracks(trace)
        fell = faller(tracks, clip.fall_start_s) if clip.fall and clip.fall_start_s is not None else None
        if clip.fall and fell is None:
            logger.info("%s: no track dropped at the labelled start; only its windows before it are used", clip.file)
        for track_id, samples in tracks.items():
            for end_s, _ in samples:
                label = label_for(clip, track_id == fell, end_s)
                if label is None:
                    continue
                for speed in speeds:
                    grid = resample(samples, end_s, WINDOW_FRAMES, STEP_S * speed)
                    if sum(kp is not None for kp in grid) < MIN_SEEN_STEPS:
                        continue
                    window = window_features(grid, MIN_KEYPOINT_SCORE)
                    if window is None:
                        continue
                    features.append(window)
                    labels.append(label)
                    clip_index.append(index)
                    ends.append(end_s)
                    track_ids.append(track_id)
                    speed_of.append(speed)
    return Windows(np.stack(features), np.array(labels, np.float32), np.array(clip_index), np.array(ends),
                   np.array(track_ids), np.array(speed_of, np.float32))


def augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Other cameras and other pose models: rotation, scale, mirror, jitter, lost points and frames."""
    out = batch.copy()
    n = len(out)
    points = out[:, :, :-1].reshape(n, WINDOW_FRAMES, -1, 3)
    present = points[..., 2] > 0
    angle = np.radians(rng.uniform(-20, 20, n))
    scale = rng.uniform(0.8, 1.25, n)
    cos, sin = np.cos(angle)[:, None, None] * scale[:, None, None], np.sin(angle)[:, None, None] * scale[:, None, None]
    x, y = points[..., 0].copy(), points[..., 1].copy()
    points[..., 0], points[..., 1] = cos * x - sin * y, sin * x + cos * y
    mirror = rng.random(n) < 0.5
    swap = np.arange(points.shape[2])
    for left, right in MIRROR_PAIRS:
        swap[left], swap[right] = right, left
    flipped = points[mirror][:, :, swap]
    flipped[..., 0] *= -1
    points[mirror] = flipped
    points[..., :2] += rng.normal(0, 0.02, points[..., :2].shape).astype(np.float32)
    points[..., 2] = np.clip(points[..., 2] + rng.normal(0, 0.05, present.shape), 0.2, 1.0)
    dropped = rng.random(present.shape) < 0.1
    lost = ~present | dropped
    points[lost] = 0.0
    out[:, :, :-1] = points.reshape(n, WINDOW_FRAMES, -1)
    frame_lost = rng.random((n, WINDOW_FRAMES)) < 0.1
    frame_lost[:, -1] = False  # the window ends on a seen skeleton, as at run time
    out[frame_lost] = 0.0
    return out


def make_model():
    import torch

    class SequenceNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gru = torch.nn.GRU(FEATURES, HIDDEN, batch_first=True)
            self.head = torch.nn.Linear(HIDDEN, 1)

        def forward(self, windows):
            _, last = self.gru(windows)
            return torch.sigmoid(self.head(last[-1]))

    return SequenceNet()


def train(windows: Windows, rows: np.ndarray, epochs: int = EPOCHS, seed: int = SEED):
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    model = make_model()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    labels = windows.labels[rows]
    positive_rows, negative_rows = rows[labels == 1], rows[labels == 0]
    positives = max(1.0, float(len(positive_rows)))
    weight_positive = NEGATIVE_SHARE * len(negative_rows) / positives  # balance the classes
    loss_fn = torch.nn.BCELoss(reduction="none")
    for epoch in range(epochs):
        negatives = rng.choice(negative_rows, int(NEGATIVE_SHARE * len(negative_rows)), replace=False)
        order = rng.permutation(np.concatenate([positive_rows, negatives]))
        total = 0.0
        for at in range(0, len(order), 256):
            chosen = order[at:at + 256]
            batch = torch.from_numpy(augment(windows.features[chosen], rng))
            target = torch.from_numpy(windows.labels[chosen]).unsqueeze(1)
            weights = 1.0 + (weight_positive - 1.0) * target
            optimiser.zero_grad()
            loss = (loss_fn(model(batch), target) * weights).mean()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(chosen)
        logger.debug("epoch %d loss %.4f", epoch + 1, total / len(order))
    model.eval()
    return model


def predict(model, features: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(features)).numpy()[:, 0]


def export_onnx(model, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(BATCH, WINDOW_FRAMES, FEATURES)
    torch.onnx.export(model, (example,), str(path), input_names=["windows"], output_names=["fall_score"],
                      opset_version=13, dynamo=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def auc(scores: np.ndarray, labels: np.ndarray) -> Optional[float]:
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return None
    order = np.argsort(np.concatenate([pos, neg]))
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _fold(job):
    """One leave-one-source-out model (a worker process: torch single-threaded in each)."""
    windows, clips, source, out_dir = _FOLD_DATA["windows"], _FOLD_DATA["clips"], job[0], job[1]
    source_of = np.array([clips[i].source for i in windows.clip_index])
    held = source_of == source
    started = time.monotonic()
    model = train(windows, np.nonzero(~held)[0])
    export_onnx(model, out_dir / f"{source_key(source)}.onnx")
    test = np.nonzero(held & (windows.speed == 1.0))[0]
    return source, test, predict(model, windows.features[test]), time.monotonic() - started


_FOLD_DATA: Dict[str, object] = {}


def loso(windows: Windows, clips: List[Clip], out_dir: Path, jobs: int = 2) -> List[Dict[str, object]]:
    """One model per source, trained without it; the held-out windows scored at speed 1."""
    import multiprocessing

    sources = sorted({clips[i].source for i in set(windows.clip_index.tolist())})
    scores = np.full(len(windows.labels), np.nan, np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    _FOLD_DATA.update(windows=windows, clips=clips)  # forked workers share it
    rows_out = {}
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for number, (source, test, fold_scores, seconds) in enumerate(
                pool.imap_unordered(_fold, [(source, out_dir) for source in sources]), 1):
            scores[test] = fold_scores
            rows_out[source] = source_row(source, fold_scores, windows.labels[test], windows.clip_index[test], clips)
            logger.info("[%d/%d] %s: %s (%.0f s)", number, len(sources), source, rows_out[source], seconds)
    np.save(out_dir / "window_scores.npy", scores)
    return [rows_out[source] for source in sources]


def source_row(source: str, scores: np.ndarray, labels: np.ndarray, clip_index: np.ndarray,
               clips: List[Clip]) -> Dict[str, object]:
    """Windows and clips: a fall clip counts as found if any of its positive windows scores >= 0.5,
    an everyday clip as a false alarm if any of its windows does."""
    found = flagged = falls = everyday = 0
    for index in sorted(set(clip_index.tolist())):
        mine = clip_index == index
        if clips[index].fall:
            falls += 1
            found += bool((scores[mine & (labels == 1)] >= 0.5).any())
        else:
            everyday += 1
            flagged += bool((scores[mine] >= 0.5).any())
    value = auc(scores, labels)
    return {"source": source, "windows": int(len(labels)), "positive": int(labels.sum()),
            "auc": None if value is None else round(value, 3), "falls_found": f"{found}/{falls}",
            "everyday_flagged": f"{flagged}/{everyday}"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+", help="clip folders with MANIFEST.tsv")
    parser.add_argument("--traces", type=Path, required=True, help="the folder `fall-edge eval --trace` wrote")
    parser.add_argument("--loso", type=Path, metavar="DIR", help="leave-one-source-out: a model per source here")
    parser.add_argument("--output", type=Path, default=ROOT / "models" / "fall_sequence.onnx")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    clips = read_clips(args.folders)
    started = time.monotonic()
    windows = build_windows(clips, args.traces)
    logger.info("%d windows (%d of a fall) from %d clips in %.0f s", len(windows.labels), int(windows.labels.sum()),
                len(set(windows.clip_index.tolist())), time.monotonic() - started)
    if args.loso:
        rows = loso(windows, clips, args.loso)
        (args.loso / "loso.json").write_text(json.dumps(rows, indent=1))
        for row in rows:
            print("\t".join(str(v) for v in row.values()))
        return 0
    model = train(windows, np.arange(len(windows.labels)), epochs=args.epochs)
    export_onnx(model, args.output)
    used = sorted({clips[i].file for i in windows.clip_index.tolist()})
    manifest = {
        "model": args.output.name, "sha256": sha256(args.output),
        "input": [BATCH, WINDOW_FRAMES, FEATURES], "step_s": STEP_S, "min_keypoint_score": MIN_KEYPOINT_SCORE,
        "windows": int(len(windows.labels)), "positive_windows": int(windows.labels.sum()),
        "settings": {"hidden": HIDDEN, "epochs": args.epochs, "seed": SEED, "speeds": list(SPEEDS),
                     "positive_from_s": POSITIVE_FROM_S, "positive_to_s": POSITIVE_TO_S},
        "clips": [{"file": name, "trace_sha256": sha256(args.traces / f"{Path(name).stem}.jsonl")} for name in used],
        "torch": __import__("torch").__version__,
    }
    args.output.with_suffix(".json").write_text(json.dumps(manifest, indent=1) + "\n")
    logger.info("wrote %s (%d bytes, sha256 %s)", args.output, args.output.stat().st_size, manifest["sha256"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What an eval result was measured with, which cases of it failed, and what changed between two.

`fall-edge eval --json` records the config's hash, the models' sha256 and the git commit, so
two result files can be compared honestly; `fall-edge eval-diff OLD NEW` lists the clips
whose outcome changed, and `fall-edge eval --rerun-failures RESULT` runs only the misses and
false alarms of a result again.
"""


import fnmatch
import hashlib
import json
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from edge.config import Config
from edge.daemon.runner import PROJECT_ROOT, resolve_model_path
from edge.errors import FallEdgeError
from edge.modelstore.fetch import sha256_of

Case = Tuple[str, str]  # (clip file name, variant)


def config_hash(config: Config) -> str:
    """sha256 of the whole effective config (defaults included), so an unchanged file with new
    defaults still reads as another config."""
    text = json.dumps(asdict(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def git_commit(folder: Path = PROJECT_ROOT) -> Optional[str]:
    """HEAD of the checkout the code runs from, with '+dirty' when files differ from it; None
    outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def model_hashes(config: Config) -> Dict[str, Optional[str]]:
    hashes: Dict[str, Optional[str]] = {}
    for name, section, enabled in (("pose", config.pose, True), ("detector", config.detector, config.detector.enabled)):
        path = resolve_model_path(section.model)
        hashes[name] = sha256_of(path) if enabled and path.is_file() else None
    return hashes


def run_metadata(config: Config, variants: Sequence[str], clip_dirs: Sequence[Path]) -> Dict[str, object]:
    return {"config_sha256": config_hash(config), "models_sha256": model_hashes(config), "git_commit": git_commit(),
            "variants": list(variants), "clip_dirs": [str(d) for d in clip_dirs]}


def read_result(path: Path) -> Dict[str, object]:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FallEdgeError(f"cannot read eval result {path}: {exc.strerror}; pass a file written by "
                            f"`fall-edge eval --json > FILE`") from None
    except json.JSONDecodeError:
        raise FallEdgeError(f"eval result {path} is not JSON: pass a file written by `fall-edge eval --json`") from None
    if not isinstance(report, dict) or "clips" not in report:
        raise FallEdgeError(f"eval result {path} has no 'clips': pass a file written by `fall-edge eval --json`")
    return report


def clip_rows(report: Dict[str, object]) -> List[Dict[str, object]]:
    """Every clip row of a result, every variant's (the plain-only form has no 'variants')."""
    variants = report.get("variants")
    if isinstance(variants, dict):
        return [row for block in variants.values() for row in block["clips"]]
    return list(report["clips"])  # type: ignore[arg-type]


def outcome_text(label: str, detected: bool, false_alarm: bool) -> str:
    """detected / MISSED / ok / FALSE ALARM, '+early' when a fall clip also had an early event."""
    if label == "fall":
        text = "detected" if detected else "MISSED"
        return text + "+early" if false_alarm else text
    return "FALSE ALARM" if false_alarm else "ok"


def row_outcome(row: Dict[str, object]) -> str:
    return outcome_text(str(row["label"]), bool(row["detected"]), bool(row["false_alarm"]))


def is_failure(row: Dict[str, object]) -> bool:
    return bool(row["false_alarm"]) or (row["label"] == "fall" and not row["detected"])


def failures(report: Dict[str, object]) -> Set[Case]:
    return {(str(row["file"]), str(row.get("variant", "plain"))) for row in clip_rows(report) if is_failure(row)}


def matches_only(file_name: str, variant: str, patterns: Iterable[str]) -> bool:
    """--only GLOB: the glob matches the file name, its stem, or 'stem.variant'."""
    stem = Path(file_name).stem
    names = (file_name, stem, f"{stem}.{variant}")
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


def diff_results(old: Dict[str, object], new: Dict[str, object]) -> List[str]:
    """Lines for the cases whose outcome changed, then those in only one result; [] when none did."""

    def outcomes(report: Dict[str, object]) -> Dict[Case, Dict[str, object]]:
        return {(str(r["file"]), str(r.get("variant", "plain"))): r for r in clip_rows(report)}

    before, after = outcomes(old), outcomes(new)
    lines = []
    for case in sorted(set(before) & set(after)):
        was, now = before[case], after[case]
        if row_outcome(was) != row_outcome(now):
            delay = f" (delay {now['delay_s']:.2f} s)" if now.get("delay_s") is not None else ""
            fixed = is_failure(was) and not is_failure(now)
            broke = is_failure(now) and not is_failure(was)
            mark = "fixed" if fixed else "BROKE" if broke else "changed"
            lines.append(f"{mark:<8} {case[0]:<40} {case[1]:<8} {row_outcome(was)} -> {row_outcome(now)}{delay}")
    for case in sorted(set(before) ^ set(after)):
        where = "only in old" if case in before else "only in new"
        row = before.get(case) or after[case]
        lines.append(f"{where:<8} {case[0]:<40} {case[1]:<8} {row_outcome(row)}")
    return lines


def describe_meta(name: str, report: Dict[str, object]) -> str:
    meta = report.get("meta") if isinstance(report.get("meta"), dict) else {}
    assert isinstance(meta, dict)
    config = str(meta.get("config_sha256") or "?")[:12]
    return f"{name}: commit {meta.get('git_commit') or '?'}, config {config}"

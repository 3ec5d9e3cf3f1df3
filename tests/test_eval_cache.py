"""The eval's model output cache on real clips: warm equals cold, what must miss misses, a killed
eval leaves only whole entries that the next one uses; and the eval's job selection and result
comparison."""

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from edge.cli import main
from edge.config import Config
from edge.daemon.runner import load_models
from edge.errors import FallEdgeError
from edge.eval.compare import diff_results, failures
from edge.eval.evaluate import EvalOptions, attach_output_cache, evaluate, list_jobs, select_jobs
from edge.perception import Detector, PoseEstimator
from edge.perception.output_cache import (
    OutputCache,
    cache_size_bytes,
    default_cache_dir,
    fingerprint,
    trim_cache,
    unpack_detections,
    unpack_people,
)

FALL_CLIP = "gmdcsa24_s3_fall20.mp4"  # 6 s, a fall at 2.3 s
NOFALL_CLIP = "gmdcsa24_s4_adl19.mp4"  # 10 s of everyday activity


def scored(result):
    """What a clip's result says, without the wall clock and the random event ids."""
    events = [{k: v for k, v in e.items() if k not in ("event_id", "ts", "started_at")} for e in result.events]
    return (result.detected, result.false_alarm, result.first_event_s, result.delay_s, result.alarm_s, events)


def job_for(clips_dir, clip, variant="plain"):
    return next(j for j in list_jobs([clips_dir], None, [variant]) if j.clip.name == clip)


def detach(models):
    for model in (models.pose, models.detector):
        if model.output_cache is not None:
            model.output_cache.close()
            model.output_cache = None


def test_warm_eval_equals_cold_and_runs_no_model(clips_dir, models, tmp_path):
    jobs = [job_for(clips_dir, FALL_CLIP), job_for(clips_dir, NOFALL_CLIP)]
    uncached = evaluate(Config(), jobs, EvalOptions(), models=models)
    attach_output_cache(models, tmp_path)
    try:
        cold = evaluate(Config(), jobs, EvalOptions(cache_dir=tmp_path), models=models)
        warm = evaluate(Config(), jobs, EvalOptions(cache_dir=tmp_path), models=models)
    finally:
        detach(models)
    assert uncached[0].detected and not uncached[1].false_alarm  # the clips do what their labels say
    assert [scored(r) for r in warm] == [scored(r) for r in cold] == [scored(r) for r in uncached]
    assert sum(r.cache_misses for r in cold) > 100
    assert sum(r.cache_misses for r in warm) == 0 and sum(r.cache_hits for r in warm) > 100


def test_other_fall_settings_rerun_from_the_cache(clips_dir, models, tmp_path):
    job = job_for(clips_dir, FALL_CLIP)
    attach_output_cache(models, tmp_path)
    try:
        evaluate(Config(), [job], EvalOptions(cache_dir=tmp_path), models=models)
        config = Config()
        stricter = replace(config, fall=replace(config.fall, alarm_hold_s=5.0))
        warm = evaluate(stricter, [job], EvalOptions(cache_dir=tmp_path), models=models)[0]
    finally:
        detach(models)
    assert warm.cache_hits > 50 and warm.cache_misses <= warm.cache_hits // 10  # crops may move a little
    assert warm.detected and warm.alarm_s - warm.first_event_s == pytest.approx(5.0, abs=0.15)


def test_a_changed_model_file_input_size_or_frame_misses(models, vtest_frames, tmp_path):
    onnx = pytest.importorskip("onnx")
    frame = vtest_frames[3]
    config = Config()
    models.detector.output_cache = OutputCache(tmp_path, fingerprint(models.detector.cache_identity()))
    models.pose.output_cache = OutputCache(tmp_path, fingerprint(models.pose.cache_identity()))
    try:
        models.detector.detect(frame)
        models.pose.estimate(frame)
        models.pose.estimate(frame)
        assert models.pose.output_cache.stats() == (1, 1)
        changed = frame.copy()
        changed[100, 100] = 255 - changed[100, 100]  # one pixel
        models.pose.estimate(changed)
        assert models.pose.output_cache.stats() == (1, 2)
    finally:
        detach(models)

    # The same network with one more metadata entry: another file, another sha256.
    graph = onnx.load(str(models.detector.backend.model_path))
    graph.doc_string = "re-exported"
    other_path = tmp_path / "other.onnx"
    onnx.save(graph, str(other_path))
    other = Detector.from_config(replace(config.detector, model=str(other_path)), other_path)
    assert other.cache_identity() != models.detector.cache_identity()
    other.output_cache = OutputCache(tmp_path, fingerprint(other.cache_identity()))
    other.detect(frame)
    assert other.output_cache.stats() == (0, 1)

    bigger = PoseEstimator.from_config(replace(config.pose, input_size=320), models.pose.backend.model_path)
    if bigger.input_size == models.pose.input_size:
        pytest.skip("this pose model has a fixed input size")
    bigger.output_cache = OutputCache(tmp_path, fingerprint(bigger.cache_identity()))
    bigger.estimate(frame)
    assert bigger.output_cache.stats() == (0, 1)


def _rows(database):
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT key, value FROM outputs").fetchall()
    finally:
        db.close()


def test_an_eval_killed_mid_run_leaves_whole_entries_the_next_one_uses(clips_dir, models, tmp_path):
    cache = tmp_path / "cache"
    process = subprocess.Popen([sys.executable, "-m", "edge.cli", "eval", str(clips_dir), "--only", NOFALL_CLIP,
                                "--cache", str(cache)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            databases = list(cache.glob("outputs-*.sqlite"))
            try:
                written = sum(len(_rows(d)) for d in databases)
            except sqlite3.Error:
                written = 0
            if written >= 40:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the eval ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(30)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700  # it holds people's keypoints
    kept = 0
    for database in cache.glob("outputs-*.sqlite"):
        db = sqlite3.connect(str(database))
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        for key, value in _rows(database):
            # every entry unpacks whole: the people or the detections the model gave
            if b"detect:" in key:
                unpack_detections(value, Config().detector.class_names)
            else:
                unpack_people(value)
            kept += 1
    assert kept >= 40
    job = job_for(clips_dir, NOFALL_CLIP)
    attach_output_cache(models, cache)
    try:
        resumed = evaluate(Config(), [job], EvalOptions(cache_dir=cache), models=models)[0]
    finally:
        detach(models)
    assert resumed.cache_hits >= kept - 5  # what the killed run finished is used
    assert resumed.cache_misses > 0  # ... and the rest is computed
    fresh = evaluate(Config(), [job], EvalOptions(), models=models)[0]
    assert scored(resumed) == scored(fresh)


def test_the_cache_stays_bounded(models, vtest_frames, tmp_path):
    cache = OutputCache(tmp_path, fingerprint("old model"))
    for index, frame in enumerate(vtest_frames[:20]):
        cache.put(cache.key(frame, "pose"), bytes(20000) + bytes([index]))
    cache.close()
    os.utime(tmp_path / f"outputs-{fingerprint('old model')}.sqlite", (1, 1))  # used long ago
    newer = OutputCache(tmp_path, fingerprint("new model"))
    for index, frame in enumerate(vtest_frames[:60]):
        newer.put(newer.key(frame, "pose"), bytes(20000) + bytes([index]))
    newer.close()
    assert cache_size_bytes(tmp_path) > 1_200_000
    size = trim_cache(tmp_path, max_bytes=800_000)
    assert size <= 800_000
    assert not (tmp_path / f"outputs-{fingerprint('old model')}.sqlite").exists()  # the stale one went first
    assert 20 <= len(_rows(tmp_path / f"outputs-{fingerprint('new model')}.sqlite")) < 60  # then the oldest rows


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "fall-edge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == __import__("pathlib").Path.home() / ".cache" / "fall-edge"


def test_only_and_rerun_failures_select_the_cases(clips_dir):
    jobs = list_jobs([clips_dir], None, ["plain", "dim"])
    assert {j.name for j in select_jobs(jobs, ["*fall20*"])} == {"gmdcsa24_s3_fall20", "gmdcsa24_s3_fall20.dim"}
    assert {j.name for j in select_jobs(jobs, ["*.dim", "gmdcsa24_s1_adl16"])} >= {"gmdcsa24_s1_adl16",
                                                                                  "gmdcsa24_s3_fall20.dim"}
    assert [j.name for j in select_jobs(jobs, [], {("gmdcsa24_s3_fall20.mp4", "dim")})] == ["gmdcsa24_s3_fall20.dim"]
    with pytest.raises(FallEdgeError, match="selects no clip"):
        select_jobs(jobs, ["nothing_like_this*"])


def test_eval_json_records_what_it_measured_and_diff_shows_changes(clips_dir, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    assert main(["eval", str(clips_dir), "--only", FALL_CLIP, "--cache", cache, "--json"]) == 0
    out, err = capsys.readouterr()
    first = json.loads(out)
    assert "misses" in err and "hits" in err
    meta = first["meta"]
    assert len(meta["config_sha256"]) == 64 and len(meta["models_sha256"]["detector"]) == 64
    assert meta["git_commit"] is None or len(meta["git_commit"].split("+")[0]) == 40
    assert first["clips"][0]["detected"]
    # The same clip where nobody can form an upright baseline (30 s upright first): no fall.
    strict = tmp_path / "strict.yaml"
    strict.write_text("fall:\n  min_upright_s: 30.0\n")
    assert main(["eval", str(clips_dir), "--only", FALL_CLIP, "--cache", cache, "--json",
                 "--config", str(strict)]) == 0
    out, err = capsys.readouterr()
    second = json.loads(out)
    assert second["meta"]["config_sha256"] != meta["config_sha256"]
    hits, misses = map(int, re.search(r"(\d+) hits, (\d+) misses", err).groups())
    assert hits > 100 and misses <= hits // 10  # the models' answers came from the cache
    assert failures(second) == {(FALL_CLIP, "plain")}
    lines = diff_results(first, second)
    assert len(lines) == 1 and "BROKE" in lines[0] and "detected -> MISSED" in lines[0]
    (tmp_path / "a.json").write_text(json.dumps(first))
    (tmp_path / "b.json").write_text(json.dumps(second))
    assert main(["eval-diff", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "detected -> MISSED" in capsys.readouterr().out
    # --rerun-failures runs the one miss again, and only it
    assert main(["eval", str(clips_dir), "--rerun-failures", str(tmp_path / "b.json"), "--cache", cache,
                 "--json", "--config", str(strict)]) == 0
    rerun = json.loads(capsys.readouterr()[0])
    assert [c["file"] for c in rerun["clips"]] == [FALL_CLIP]


def test_eval_without_cache_writes_nothing(clips_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert main(["eval", str(clips_dir), "--only", FALL_CLIP, "--no-cache"]) == 0
    assert "model cache off" in capsys.readouterr().err
    assert not (tmp_path / "fall-edge").exists()


def test_eval_workers_share_one_cache(clips_dir, tmp_path):
    """Two worker processes write to one cache at once; a second run of the same jobs is all hits."""
    jobs = [job_for(clips_dir, FALL_CLIP), job_for(clips_dir, "gmdcsa24_s3_adl19.mp4")]
    options = EvalOptions(cache_dir=tmp_path)
    cold = evaluate(Config(), jobs, options, jobs=2)
    warm = evaluate(Config(), jobs, options, jobs=2)
    assert [scored(r) for r in warm] == [scored(r) for r in cold]
    assert sum(r.cache_misses for r in warm) == 0


@pytest.fixture(scope="module", autouse=True)
def _models_loaded():
    # Load the real models once up front, so a missing model fails here with the fix.
    load_models(Config())

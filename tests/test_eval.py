"""`fall-edge eval`: labels, scoring rules, and the numbers on the development clips."""

import json

import pytest
from conftest import CLIPS_DIR

from edge.cli import main
from edge.config import Config
from edge.errors import FallEdgeError
from edge.eval.evaluate import ClipLabel, EvalOptions, evaluate, list_jobs, read_labels, score_clip, summarise

EXTRA_CLIPS_DIR = CLIPS_DIR.parent / "clips-extra"
WILD_CLIPS_DIR = CLIPS_DIR.parent / "clips-wild"


def event(kind, time_s):
    return {"type": kind, "stream_time_s": time_s}


def test_scoring_rules():
    fall = ClipLabel("a.mp4", True, 2.0)
    assert score_clip(fall, [event("fall_detected", 3.0), event("alarm", 6.0)]).delay_s == 1.0
    early = score_clip(fall, [event("fall_detected", 0.5)])  # more than 1 s before the fall: false alarm
    assert early.false_alarm and not early.detected
    tolerated = score_clip(fall, [event("fall_detected", 1.2)])
    assert tolerated.detected and tolerated.delay_s == pytest.approx(-0.8)
    assert not score_clip(fall, [event("recovered", 3.0)]).detected
    quiet = ClipLabel("b.mp4", False, None)
    assert score_clip(quiet, [event("alarm", 4.0)]).false_alarm
    assert not score_clip(quiet, []).false_alarm
    summary = summarise([score_clip(fall, [event("fall_detected", 3.0)]), score_clip(quiet, [event("alarm", 1.0)]),
                         score_clip(ClipLabel("c.mp4", True, 1.0), [])])
    assert (summary.true_positives, summary.false_positives, summary.false_negatives) == (1, 1, 1)
    assert summary.precision == 0.5 and summary.recall == 0.5 and summary.median_delay_s == 1.0


def test_false_alarms_per_hour_count_everyday_footage_only():
    def clip(label, events, duration_s):
        result = score_clip(label, events)
        result.duration_s = duration_s
        return result

    quiet, busy = ClipLabel("q.mp4", False, None), ClipLabel("b.mp4", False, None)
    fall = ClipLabel("f.mp4", True, 5.0)
    # 30 min + 15 min of everyday footage with one false alarm; the fall clip's early event is an FP
    # but not everyday footage.
    summary = summarise([clip(quiet, [], 1800.0), clip(busy, [event("fall_detected", 9.0)], 900.0),
                         clip(fall, [event("fall_detected", 1.0)], 600.0)])
    assert summary.false_positives == 2
    assert summary.everyday_s == 2700.0 and summary.everyday_false_alarms == 1
    assert summary.false_alarms_per_hour == pytest.approx(1.33, abs=0.01)
    assert summarise([clip(fall, [], 60.0)]).false_alarms_per_hour is None


def test_labels_files(tmp_path):
    plain = tmp_path / "labels.tsv"
    plain.write_text("file\tlabel\tfall_start_s\nx.mp4\tfall\t2.5\ny.mp4\tnofall\t\n")
    labels = read_labels(plain)
    assert labels["x.mp4"].fall_start_s == 2.5 and not labels["y.mp4"].fall
    headerless = tmp_path / "h.tsv"
    headerless.write_text("x.mp4\tfall\t1\n")
    assert read_labels(headerless)["x.mp4"].fall
    bad = tmp_path / "bad.tsv"
    bad.write_text("file\tlabel\tfall_start_s\nx.mp4\tfell\t2\n")
    with pytest.raises(FallEdgeError, match="line 2: label must be fall or nofall"):
        read_labels(bad)
    no_start = tmp_path / "nostart.tsv"
    no_start.write_text("file\tlabel\tfall_start_s\nx.mp4\tfall\t\n")
    with pytest.raises(FallEdgeError, match="a fall needs its start"):
        read_labels(no_start)


def test_eval_on_the_development_clips(clips_dir, models, capsys):
    """Done-when of issue 2: all 4 falls found, no alarm on the 5 everyday clips."""
    assert main(["eval", str(clips_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for clip in report["clips"]:
        print(f"{clip['file']:<28} {clip['label']:<6} detected={clip['detected']} "
              f"false_alarm={clip['false_alarm']} delay={clip['delay_s']}")
    summary = report["summary"]
    print(summary)
    assert summary["falls"] == 4 and summary["clips"] == 9
    assert summary["recall"] == 1.0 and summary["precision"] == 1.0
    assert summary["median_delay_s"] < 1.5
    # the five everyday clips' own footage (the padded end is not footage)
    everyday = [c for c in report["clips"] if c["label"] == "nofall"]
    assert all(3.0 < c["duration_s"] < 60.0 for c in everyday)
    assert summary["everyday_s"] == pytest.approx(sum(c["duration_s"] for c in everyday), abs=0.5)
    assert summary["false_alarms_per_hour"] == 0.0
    manifest = read_labels(clips_dir / "MANIFEST.tsv")
    on_floor = {"gmdcsa24_s1_fall15.mp4": 2.8, "gmdcsa24_s2_fall13.mp4": 3.3, "gmdcsa24_s3_fall20.mp4": 3.2,
                "gmdcsa24_s4_fall03.mp4": 2.3}
    for clip in report["clips"]:
        if clip["label"] == "fall":
            assert manifest[clip["file"]].fall
            # fall_detected within about 1.5 s of the body reaching the floor
            assert clip["first_event_s"] - on_floor[clip["file"]] <= 1.5
            # and the alarm after the hold, thanks to the padded end
            assert clip["alarm_s"] is not None


# One real clip (as the eval's variant shows it) per failure class of issue 21 that has landed.
HARD_CASES = [
    # A fall towards a high frontal camera: the torso stays near vertical in the image and the
    # person is then lost on the floor; the fast descent that ended in the lost track decides.
    ("upfall_a4_t3_cam2.mp4", "plain", True),
    # The clip starts 0.4 s before the fall: too short for min_upright_s; the quick lead-in (two
    # upright frames, then the hips dropping fast) makes the candidate.
    ("upfall_a1_t3_cam1.mp4", "cut", True),
    # ... and here the first upright frames show the body but not yet the torso (too few points
    # for it): they still count towards the quick lead-in.
    ("gmdcsa24_s4_fall03.mp4", "cut", True),
    # The video freezes mid-fall and resumes with the person on the mattress; dimmed, the first
    # skeleton on the floor comes from a crop on a new detector box, which must still continue
    # the track that stood there (tracker.continue_fallen).
    ("upfall_a4_t2_cam2.mp4", "dim", True),
    # A deep bend to pick something up, seen from the side: hips come back up, no alarm.
    ("upfall_a9_cam1.mp4", "plain", False),
    # Issue 29: push-up progressions ending prone; the rules confirmed a fall at 35.4 s, the learned
    # sequence cue scores that controlled descent 0.02 and vetoes it (0.02 too under leave-one-source-out).
    ("n_chron_pushups.mp4", "plain", False),
    # Issue 29: seen upright on only two frames, then falling into the gap behind a bed.
    ("f_xav_bedroomhidden.mp4", "plain", True),
    # Issue 29: seated in an armchair from the start, falls forward out of it away from a high
    # camera: measured against the seated posture (the hips rose in the picture).
    ("hqfsd_fall30_cam3.mp4", "plain", True),
]


@pytest.mark.parametrize("clip,variant,fall", HARD_CASES, ids=[f"{c[0].split('.')[0]}.{c[1]}" for c in HARD_CASES])
def test_issue_21_failure_classes_on_real_clips(clip, variant, fall, models):
    folder = (CLIPS_DIR if clip.startswith("gmdcsa24") else
              WILD_CLIPS_DIR if clip.startswith(("f_", "n_")) else EXTRA_CLIPS_DIR)
    if not (folder / "MANIFEST.tsv").is_file():
        pytest.skip(f"development clips not found at {folder}")
    job = next(j for j in list_jobs([folder], None, [variant]) if j.clip.name == clip)
    result = evaluate(Config(), [job], EvalOptions(), models=models)[0]
    print(result)
    assert not result.false_alarm
    assert result.detected == fall
    if fall:
        assert result.delay_s is not None and result.delay_s <= 3.0

"""Zones (README "Zones"): polygon geometry, the config's checks, and each rule on skeleton
sequences through the real tracker and state machine, and on real clips."""

import pytest
from conftest import CLIPS_DIR, VTEST
from skeletons import box_of, pose

from edge.config import Config, FallConfig, TrackerConfig, ZoneConfig, config_from_dict
from edge.errors import ConfigError
from edge.eval.evaluate import EvalOptions, evaluate, list_jobs
from edge.geometry import point_in_polygon, self_intersecting, time_to_enter
from edge.tracking.tracker import Tracker
from edge.types import EventType, Observation, Person
from edge.zones.areas import ZoneSet
from edge.zones.danger import DangerWatcher

WILD_CLIPS_DIR = CLIPS_DIR.parent / "clips-wild"
FPS = 10.0
FRAME = (640, 640)
SQUARE = [[0.2, 0.2], [0.6, 0.2], [0.6, 0.6], [0.2, 0.6]]


# -- geometry ---------------------------------------------------------------------------------

def test_point_in_polygon_and_self_intersection():
    assert point_in_polygon((0.4, 0.4), SQUARE) and not point_in_polygon((0.7, 0.4), SQUARE)
    l_shape = [[0, 0], [1, 0], [1, 0.5], [0.5, 0.5], [0.5, 1], [0, 1]]
    assert point_in_polygon((0.25, 0.75), l_shape) and not point_in_polygon((0.75, 0.75), l_shape)
    assert not self_intersecting(SQUARE) and not self_intersecting(l_shape)
    assert self_intersecting([[0, 0], [1, 1], [1, 0], [0, 1]])  # a figure eight
    assert self_intersecting([[0, 0], [1, 0], [1, 1], [1, 0], [0, 1]])  # a point given twice
    assert self_intersecting([[0, 0], [1, 0], [0.5, 0], [0.5, 1]])  # an edge folding back on its neighbour


def test_time_to_enter_carries_the_point_forward():
    assert time_to_enter((0.4, 0.4), (0.0, 0.0), SQUARE, 2.0) == 0.0  # already inside
    assert time_to_enter((0.0, 0.4), (0.1, 0.0), SQUARE, 3.0) == pytest.approx(2.0)  # 0.2 away at 0.1/s
    assert time_to_enter((0.0, 0.4), (0.1, 0.0), SQUARE, 1.5) is None  # too far for the lookahead
    assert time_to_enter((0.0, 0.4), (-0.1, 0.0), SQUARE, 10.0) is None  # walking away
    assert time_to_enter((0.0, 0.1), (0.2, 0.0), SQUARE, 10.0) is None  # passing above its edge


# -- the config's checks ----------------------------------------------------------------------

@pytest.mark.parametrize("zones,message", [
    ([{"name": "a", "kind": "bed", "polygon": [[0.1, 0.1], [0.5, 0.1]]}], "must be 3 to 64 points"),
    ([{"name": "a", "kind": "bed", "polygon": [[10, 10], [300, 10], [300, 200]]}], "shares of the frame"),
    ([{"name": "a", "kind": "bed", "polygon": [[0, 0], [1, 1], [1, 0], [0, 1]]}], "without crossing itself"),
    ([{"name": "a", "kind": "bed", "polygon": [[0, 0], [0.5, 0.5], [1, 1]]}], "enclose an area"),
    ([{"name": "a", "kind": "sofa", "polygon": SQUARE}], "must be bed, danger or watch"),
    ([{"name": "a", "kind": "bed", "polygon": SQUARE}, {"name": "a", "kind": "danger", "polygon": SQUARE}],
     "'zones[].name' must be unique within a camera"),
    ([{"name": "", "kind": "bed", "polygon": SQUARE}], "'zones[].name' must be a name"),
])
def test_bad_zones_are_refused_in_one_line_naming_the_key(zones, message):
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"zones": zones})
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_zones_belong_to_their_camera():
    bed = {"name": "bed1", "kind": "bed", "polygon": SQUARE}
    config = config_from_dict({
        "cameras": [{"name": "ward", "source": "csi://0", "zones": [bed]}, {"name": "hall", "source": "csi://1"}],
        "zones": [{"name": "door", "kind": "danger", "polygon": SQUARE}]})
    assert [z.name for z in config.zones_of("ward")] == ["bed1"]
    assert config.zones_of("hall") == []  # listed without zones: none, not the top-level ones
    assert [z.name for z in config.zones_of("cam0")] == ["door"]  # run --source
    with pytest.raises(ConfigError, match=r"'cameras\[\].zones\[\].polygon' must have every x and y between 0"):
        config_from_dict({"cameras": [{"name": "ward", "source": "csi://0",
                                       "zones": [dict(bed, polygon=[[0, 0], [2, 0], [0, 2]])]}]})


# -- beds, by skeleton sequence -----------------------------------------------------------------

def person_at(**arguments) -> Observation:
    keypoints = pose(**arguments)
    box = box_of(keypoints)
    return Observation(box=box, person=Person(box=box, score=0.8, keypoints=keypoints))


def run(frames, zones=()):
    tracker = Tracker(TrackerConfig(), FallConfig(), zones=ZoneSet(list(zones)))
    events = []
    for index, observations in enumerate(frames):
        time_s = index / FPS
        tracker.update(observations, time_s)
        events += [t.type for _, t in tracker.advance_falls(time_s, 0.2, detector_enabled=False, frame_size=FRAME)]
    return events


# A low bed seen from a high camera: its mattress spans x 20-330 px at y 333-397 px. Someone
# standing beside it has their feet at y 420 and hips at y 270; lying on it, the hips are at y 365
# (a drop of a torso length: the same flop onto the floor is a fall); the floor beside it is y 450.
BED = ZoneConfig(name="bed1", kind="bed", polygon=[[0.03, 0.52], [0.52, 0.52], [0.52, 0.62], [0.03, 0.62]])
IN_BED = {"body_tilt_deg": -88.0, "foot_y": 365.0}


def test_lying_down_in_bed_is_silent_and_the_same_flop_elsewhere_is_a_fall():
    """Stands beside the bed, then drops fast onto it (a flop that alarms without the zone)."""
    standing = [[person_at()] for _ in range(20)]
    flop = [[person_at(body_tilt_deg=-88.0 * (i + 1) / 5, foot_y=420.0 - 55.0 * (i + 1) / 5)] for i in range(5)]
    lying = [[person_at(**IN_BED)] for _ in range(60)]
    frames = standing + flop + lying
    assert run(frames) == [EventType.FALL_DETECTED, EventType.ALARM]
    assert run(frames, [BED]) == []


def test_rolling_out_of_bed_onto_the_floor_is_a_fall_even_without_an_upright_baseline():
    """Seen asleep in bed from the start (no upright baseline: without the zone nothing can alarm),
    rolls off the edge and lies on the floor."""
    asleep = [[person_at(**IN_BED)] for _ in range(30)]
    roll = [[person_at(body_tilt_deg=-88.0, foot_y=365.0 + 85.0 * (i + 1) / 6, centre_x=320.0 + 40.0 * (i + 1) / 6)]
            for i in range(6)]
    on_the_floor = [[person_at(body_tilt_deg=-88.0, foot_y=450.0, centre_x=360.0)] for _ in range(50)]
    frames = asleep + roll + on_the_floor
    assert run(frames) == []
    assert run(frames, [BED]) == [EventType.FALL_DETECTED, EventType.ALARM]


def test_getting_up_from_bed_is_ordinary():
    asleep = [[person_at(**IN_BED)] for _ in range(30)]
    sit_up = [[person_at(body_tilt_deg=-88.0 * (1 - (i + 1) / 15), foot_y=365.0 + 55.0 * (i + 1) / 15)]
              for i in range(15)]
    standing = [[person_at()] for _ in range(30)]
    walking_off = [[person_at(centre_x=320.0 + 15.0 * (i + 1))] for i in range(15)]
    assert run(asleep + sit_up + standing + walking_off, [BED]) == []


# -- danger zones --------------------------------------------------------------------------------

DANGER = ZoneConfig(name="press", kind="danger", polygon=[[0.6, 0.5], [0.9, 0.5], [0.9, 0.9], [0.6, 0.9]],
                    min_dwell_s=0.5, lookahead_s=2.0, cooldown_s=30.0)


def walk(start, velocity, seconds):
    """Feet positions (shares) at FPS along a straight line."""
    steps = int(seconds * FPS)
    return [(start[0] + velocity[0] * i / FPS, start[1] + velocity[1] * i / FPS) for i in range(steps)]


def watch(path, zone=DANGER, track_id=7):
    watcher = DangerWatcher([zone])
    hits = []
    for index, point in enumerate(path):
        hits += [(round(index / FPS, 1), h.type, h.zone, h.seconds_to_enter)
                 for h in watcher.update(index / FPS, {track_id: point}, {track_id})]
    return hits, watcher


def test_walking_into_a_danger_zone_warns_approaching_then_intrusion_after_the_dwell_then_cleared():
    # 0.2 a second towards the zone's left edge (x 0.6) from x 0.1: enters at 2.5 s.
    path = walk((0.1, 0.7), (0.2, 0.0), 3.5)  # stops inside at x 0.78
    path += [path[-1]] * 20 + walk((0.78, 0.7), (0.0, 0.3), 1.5)  # stands 2 s, leaves downwards
    path += [path[-1]] * 10
    hits, _ = watch(path)
    kinds = [h[1] for h in hits]
    assert kinds == [EventType.APPROACHING, EventType.INTRUSION, EventType.INTRUSION_CLEARED]
    approaching, intrusion, cleared = hits
    assert approaching[0] <= 0.5 + 1e-9 and 1.5 <= approaching[3] <= 2.0  # warned before, with the time left
    assert 3.0 <= intrusion[0] <= 3.1  # entered at 2.5 s, feet inside for min_dwell_s
    assert all(h[2] == "press" for h in hits)


def test_walking_past_the_edge_or_standing_beside_it_is_nothing():
    along = walk((0.1, 0.45), (0.25, 0.0), 4.0)  # parallel to the top edge, 0.05 above it
    assert watch(along)[0] == []
    beside = [(0.55 + 0.003 * (i % 3), 0.7) for i in range(60)]  # standing 0.05 from it, feet jittering
    assert watch(beside)[0] == []


def test_a_brief_step_in_is_not_an_intrusion_and_warnings_respect_the_cooldown():
    step_in = [(0.55, 0.7)] * 10 + [(0.62, 0.7)] * 3 + [(0.55, 0.7)] * 10  # 0.3 s inside: under the dwell
    assert [h[1] for h in watch(step_in, ZoneConfig(**{**DANGER.__dict__, "lookahead_s": 0.0}))[0]] == []
    twice = [(0.7, 0.7)] * 10 + [(0.5, 0.7)] * 10 + [(0.7, 0.7)] * 10  # in, out, in again within 30 s
    kinds = [h[1] for h in watch(twice, ZoneConfig(**{**DANGER.__dict__, "lookahead_s": 0.0}))[0]]
    assert kinds == [EventType.INTRUSION, EventType.INTRUSION_CLEARED]


def test_a_person_who_vanishes_inside_has_the_intrusion_cleared():
    watcher = DangerWatcher([DANGER])
    for index in range(10):
        watcher.update(index / FPS, {3: (0.7, 0.7)}, {3})
    assert [h.type for h in watcher.update(1.1, {}, {3})] == []  # out of sight, still tracked
    assert [h.type for h in watcher.update(1.2, {}, set())] == [EventType.INTRUSION_CLEARED]


# -- real clips ------------------------------------------------------------------------------------

def _wild_clip(models, name, zones):
    if not (WILD_CLIPS_DIR / "MANIFEST.tsv").is_file():
        pytest.skip(f"development clips not found at {WILD_CLIPS_DIR}")
    job = next(j for j in list_jobs([WILD_CLIPS_DIR], None, ["plain"]) if j.clip.name == name)
    return evaluate(Config(zones=zones), [job], EvalOptions(), models=models)[0]


def test_a_bed_zone_silences_a_real_flop_onto_a_bed(models):
    """f_xav_bedjump: two people flop backwards onto a bed on purpose; the rules alone take it for
    a fall. With the bed drawn as a zone (where it is after the camera's small shift), silent."""
    bed = ZoneConfig(name="bed", kind="bed", polygon=[[0.0, 0.45], [0.56, 0.45], [0.6, 0.88], [0.0, 0.88]])
    assert _wild_clip(models, "f_xav_bedjump.mp4", []).false_alarm
    assert not _wild_clip(models, "f_xav_bedjump.mp4", [bed]).false_alarm


def test_a_real_fall_beside_a_bed_zone_still_alarms(models):
    """f_xav_livingyellow: a fall onto the tiled floor in front of a sofa drawn as a bed zone."""
    sofa = ZoneConfig(name="sofa", kind="bed", polygon=[[0.36, 0.25], [0.75, 0.25], [0.75, 0.53], [0.36, 0.53]])
    result = _wild_clip(models, "f_xav_livingyellow.mp4", [sofa])
    assert result.detected and not result.false_alarm and result.delay_s <= 1.5


def test_watch_zones_report_only_the_falls_inside_them(models):
    """f_xav_livingyellow: the fall ends on the floor in front of the coffee table. A watch zone
    there reports it (naming the zone); a watch zone over the sofas only does not."""
    floor = ZoneConfig(name="floor", kind="watch", polygon=[[0.1, 0.55], [0.9, 0.55], [0.9, 0.95], [0.1, 0.95]])
    sofas = ZoneConfig(name="sofas", kind="watch", polygon=[[0.1, 0.2], [0.9, 0.2], [0.9, 0.5], [0.1, 0.5]])
    inside = _wild_clip(models, "f_xav_livingyellow.mp4", [floor])
    assert inside.detected and {e["zone"] for e in inside.events} == {"floor"}
    outside = _wild_clip(models, "f_xav_livingyellow.mp4", [sofas])
    assert not outside.detected and outside.events == []


def test_danger_zone_on_real_walkers(models, vtest_frames):
    """OpenCV's vtest.avi: people walking across a square; a danger zone on part of the path.
    Everyone whose feet stay in it is warned once, those heading for it before, and each
    intrusion is cleared when they walk out."""
    from edge.daemon.pipeline import FallPipeline
    from edge.daemon.router import mqtt_payload
    from edge.types import Frame

    road = ZoneConfig(name="road", kind="danger", polygon=[[0.6, 0.4], [0.85, 0.4], [0.85, 0.62], [0.6, 0.62]])
    pipeline = FallPipeline(Config(zones=[road]), models.pose, models.detector)
    events = []
    for index, image in enumerate(vtest_frames):
        events += pipeline.process(Frame(image, index, index / 10.0)).events
    by_track = {}
    for event in events:
        assert event.zone == "road"
        by_track.setdefault(event.track_id, []).append(event.type)
    intruders = [t for t, kinds in by_track.items() if EventType.INTRUSION in kinds]
    assert len(intruders) >= 3
    for kinds in by_track.values():
        assert kinds.count(EventType.INTRUSION) <= 1 and kinds.count(EventType.APPROACHING) <= 1  # the cooldown
        if EventType.INTRUSION_CLEARED in kinds:
            assert kinds.index(EventType.INTRUSION) < kinds.index(EventType.INTRUSION_CLEARED)
    warned_first = [t for t in intruders if by_track[t][0] == EventType.APPROACHING]
    assert warned_first, "someone walking into the zone is warned before they are in it"
    approaching = next(e for e in events if e.type == EventType.APPROACHING)
    payload = mqtt_payload(approaching, "dev1", None)
    assert payload["zone"] == "road" and 0 < payload["seconds_to_enter"] <= road.lookahead_s
    # With no zone configured, the same footage gives no zone event at all.
    plain = FallPipeline(Config(), models.pose, models.detector)
    assert not [e for i, image in enumerate(vtest_frames[:30])
                for e in plain.process(Frame(image, i, i / 10.0)).events]


def test_zones_command_draws_the_configured_zones_on_a_real_frame(tmp_path, capsys):
    """`fall-edge zones --snapshot`: the camera's frame with each zone outlined in its kind's
    colour, written owner-only; a camera without zones is a one-line error."""
    import cv2
    import numpy as np

    from edge.capture.opencv_source import iter_video_frames
    from edge.cli import main
    from edge.viz.draw import ZONE_COLOURS

    if not VTEST.is_file():
        pytest.skip(f"{VTEST} missing")
    config = tmp_path / "zones.yaml"
    config.write_text("cameras:\n- name: square\n  source: " + str(VTEST) + "\n  zones:\n"
                      "  - {name: road, kind: danger, polygon: [[0.6, 0.4], [0.85, 0.4], [0.85, 0.62], [0.6, 0.62]]}\n"
                      "- name: bare\n  source: " + str(VTEST) + "\n")
    out = tmp_path / "check.jpg"
    assert main(["zones", "--config", str(config), "--camera", "square", "--snapshot", str(out)]) == 0
    assert "road" in capsys.readouterr().out and out.stat().st_mode & 0o777 == 0o600
    drawn = cv2.imread(str(out))
    raw = next(iter_video_frames(VTEST))
    assert drawn.shape == raw.shape
    edge_x, edge_y = int(0.7 * raw.shape[1]), int(round(0.62 * raw.shape[0]))  # on the zone's bottom edge
    colour = np.array(ZONE_COLOURS["danger"], float)
    assert np.abs(drawn[edge_y, edge_x].astype(float) - colour).max() < 60  # the outline is there ...
    assert np.abs(drawn[5, 5].astype(float) - raw[5, 5].astype(float)).max() < 30  # ... and nothing far from it
    assert main(["zones", "--config", str(config), "--camera", "bare", "--snapshot", str(out)]) == 2
    assert "camera bare has no zones" in capsys.readouterr().err



def test_danger_rules_on_walking_skeletons():
    """The same rules on skeleton sequences: the feet come from the skeleton's ankles (the ground
    point), through the real tracker. Walking into the zone: approaching, then intrusion after the
    dwell; walking along its edge: nothing."""
    from edge.zones.areas import ground_point, to_shares

    zone = ZoneConfig(name="pit", kind="danger", polygon=[[0.7, 0.6], [0.95, 0.6], [0.95, 0.75], [0.7, 0.75]])

    def walk_events(foot_y: float) -> list:
        tracker = Tracker(TrackerConfig(), FallConfig())
        watcher = DangerWatcher([zone])
        out = []
        for index in range(50):  # 5 s walking right at 60 px/s (0.09 of the 640 px frame a second)
            time_s = index / FPS
            tracks = tracker.update([person_at(centre_x=200.0 + 6.0 * index, foot_y=foot_y)], time_s)
            feet = {t.track_id: to_shares(ground_point(t.person.keypoints, t.box, 0.2), FRAME) for t in tracks}
            out += [(round(time_s, 1), hit.type) for hit in watcher.update(time_s, feet, set(feet))]
        return out

    into = walk_events(foot_y=430.0)  # feet at 0.67 of the height: inside the zone's band
    assert [kind for _, kind in into] == [EventType.APPROACHING, EventType.INTRUSION]
    (warned_at, _), (entered_at, _) = into
    # the feet cross x 0.7 (448 px) at 4.1 s: warned about 2 s before (the lookahead), in after the dwell
    assert 1.9 <= warned_at <= 2.4 and 4.5 <= entered_at <= 4.8
    assert walk_events(foot_y=370.0) == []  # feet at 0.58: walking along above its top edge

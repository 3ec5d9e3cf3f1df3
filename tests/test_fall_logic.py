"""Features and the per-track state machine, on keypoint sequences of falls and hard negatives."""

from typing import List

import pytest
from skeletons import FOOT_Y, box_of, hold, pose, ramp

from edge.config import FallConfig
from edge.fall.features import lying_score, posture_features, torso_angle_deg
from edge.fall.features import ramp as ramp_fn
from edge.fall.state_machine import FallState, FallStateMachine, Transition
from edge.types import Box

FPS = 10.0


def feed(machine: FallStateMachine, poses: List[dict], detector_fall_score=None,
         detector_seen=lambda time_s: None) -> List[Transition]:
    """One pose per frame at FPS, through the real feature code into the machine."""
    events: List[Transition] = []
    for index, arguments in enumerate(poses):
        keypoints = pose(**arguments)
        box = box_of(keypoints)
        features = posture_features(keypoints, box, detector_fall_score, 0.2)
        events += machine.update(index / FPS, features, box.height, detector_seen(index / FPS))
    return events


def run(poses: List[dict], config: FallConfig = None, detector_fall_score=None) -> tuple:
    machine = FallStateMachine(config or FallConfig())
    events = feed(machine, poses, detector_fall_score)
    return [e.type for e in events], machine, events


STAND = hold(2.0, FPS)


def fall(seconds=0.7, tilt=88.0):
    return ramp(seconds, FPS, body_tilt_deg=tilt)


def lie(seconds, tilt=88.0):
    return hold(seconds, FPS, body_tilt_deg=tilt)


def test_torso_angle_geometry():
    assert torso_angle_deg(pose(), 0.2) == pytest.approx(0.0, abs=1e-3)
    assert torso_angle_deg(pose(body_tilt_deg=90), 0.2) == pytest.approx(90.0, abs=1e-3)
    assert torso_angle_deg(pose(body_tilt_deg=-90), 0.2) == pytest.approx(90.0, abs=1e-3)
    assert torso_angle_deg(pose(torso_bend_deg=45), 0.2) == pytest.approx(45.0, abs=1e-3)
    assert torso_angle_deg(pose(body_tilt_deg=180), 0.2) == pytest.approx(180.0, abs=1e-3)
    assert torso_angle_deg(pose(score=0.1), 0.2) is None  # no confident torso, no angle


def test_lying_score_needs_the_cues_to_agree():
    config = FallConfig()
    assert ramp_fn(40, 40, 70) == 0 and ramp_fn(55, 40, 70) == 0.5 and ramp_fn(90, 40, 70) == 1
    assert lying_score(5, 0.4, None, config) == 0
    assert lying_score(90, 3.0, 0.9, config) == pytest.approx(0.97)
    # The detector alone on a squat (Fall 0.75) with an upright torso stays below lying_enter.
    assert lying_score(3, 1.0, 0.75, config) < config.lying_enter
    assert lying_score(None, None, None, config) is None


def test_fall_raises_one_fall_detected_then_one_alarm():
    types, machine, events = run(STAND + fall() + lie(8.0))
    assert types == ["fall_detected", "alarm"]
    fall_event, alarm = events
    assert fall_event.fall_started_s == pytest.approx(2.0, abs=0.3)
    # Confirmed soon after reaching the floor (2.7 s) and the alarm a hold later.
    assert fall_event.time_s - 2.7 < 1.0
    assert alarm.time_s - fall_event.time_s == pytest.approx(FallConfig().alarm_hold_s, abs=0.15)
    assert machine.state == FallState.ALARM
    assert 0.5 < fall_event.confidence <= 1.0


def test_fall_sideways_the_other_way_and_forward_onto_knees():
    assert run(STAND + fall(tilt=-85) + lie(5.0, tilt=-85))[0] == ["fall_detected", "alarm"]
    knees = ramp(0.6, FPS, hip_drop=0.3, knee_forward=0.1)  # drop to the knees ...
    onto_floor = ramp(0.5, FPS, hip_drop=0.3, knee_forward=0.1, body_tilt_deg=80)  # ... then forward
    types = run(STAND + knees + onto_floor + hold(5.0, FPS, hip_drop=0.3, knee_forward=0.1, body_tilt_deg=80))[0]
    assert types == ["fall_detected", "alarm"]


def test_getting_up_before_the_hold_gives_recovered_and_no_alarm():
    get_up = [{"body_tilt_deg": 88 - 88 * (i + 1) / 10} for i in range(10)]
    types = run(STAND + fall() + lie(1.5) + get_up + STAND + STAND)[0]
    assert types[0] == "fall_detected" and "alarm" not in types and types[-1] == "recovered"


def test_recovery_after_the_alarm_and_a_second_fall_is_a_second_chain():
    first = STAND + fall() + lie(4.0)
    get_up = [{"body_tilt_deg": 88 - 88 * (i + 1) / 10} for i in range(10)]
    second = STAND + fall() + lie(4.0)
    types = run(first + get_up + second)[0]
    assert types == ["fall_detected", "alarm", "recovered", "fall_detected", "alarm"]


def test_hard_negative_bending_to_the_floor():
    bend = ramp(0.6, FPS, torso_bend_deg=85) + hold(2.0, FPS, torso_bend_deg=85)
    back = [{"torso_bend_deg": 85 - 85 * (i + 1) / 6} for i in range(6)]
    types, machine, _ = run(STAND + bend + back + STAND)
    assert types == []
    assert machine.state == FallState.UPRIGHT


def test_hard_negative_sitting_down_fast():
    sit = ramp(0.3, FPS, hip_drop=0.25, knee_forward=0.2) + hold(5.0, FPS, hip_drop=0.25, knee_forward=0.2)
    assert run(STAND + sit)[0] == []


def test_hard_negative_deep_squats_even_with_the_detector_saying_fall():
    down = ramp(0.4, FPS, hip_drop=0.35, knee_forward=0.15, torso_bend_deg=25)
    squat = down + list(reversed(down)) + hold(0.3, FPS)
    assert run(STAND + squat * 3 + STAND, detector_fall_score=0.75)[0] == []


def test_hard_negative_lying_in_bed_when_the_stream_starts():
    types, machine, _ = run(lie(20.0))
    assert types == []
    assert machine.state == FallState.LYING


def test_lying_without_baseline_alarms_when_configured():
    config = FallConfig(require_upright_baseline=False)
    types, _, events = run(lie(10.0), config=config)
    assert types == ["fall_detected", "alarm"]
    assert events[0].fall_started_s is None


def test_hard_negative_sitting_on_a_bed_then_lying_down():
    seated = {"hip_drop": 0.26, "knee_forward": 0.2}
    sit = ramp(0.8, FPS, **seated) + hold(2.0, FPS, **seated)
    recline = [dict(seated, torso_bend_deg=-88 * (i + 1) / 15) for i in range(15)]
    types, machine, _ = run(STAND + sit + recline + hold(8.0, FPS, torso_bend_deg=-88, **seated))
    assert types == []
    assert machine.state == FallState.LYING


def test_detector_must_have_looked_before_a_fall_is_confirmed():
    config = FallConfig()
    machine = FallStateMachine(config)
    sequence = STAND + fall() + lie(2.0)
    # The detector last ran at t=0 and never again: the fall waits for it.
    assert feed(machine, sequence, detector_seen=lambda time_s: 0.0) == []
    assert machine.state == FallState.FALLING
    keypoints = pose(body_tilt_deg=88)
    features = posture_features(keypoints, box_of(keypoints), 0.8, 0.2)
    time_s = len(sequence) / FPS
    assert [e.type for e in machine.update(time_s, features, 50.0, detector_seen_since=time_s)] == ["fall_detected"]


def test_unobserved_frames_keep_the_alarm_timer_running():
    config = FallConfig()
    machine = FallStateMachine(config)
    sequence = STAND + fall() + lie(0.6)
    types = [e.type for e in feed(machine, sequence)]
    assert types == ["fall_detected"]
    # The person is hidden (no observation) but was last seen lying: the alarm still comes.
    for step in range(1, 40):
        types += [e.type for e in machine.update(len(sequence) / FPS + step / FPS, None, 50.0)]
    assert types == ["fall_detected", "alarm"]


def test_fall_is_confirmed_when_the_skeleton_is_lost_on_the_floor():
    """MoveNet often loses people lying down; the box and the detector then carry the fall."""
    config = FallConfig()
    machine = FallStateMachine(config)
    sequence = STAND + fall()
    types = [e.type for e in feed(machine, sequence, 0.1, detector_seen=lambda time_s: time_s)]
    lying_box = box_of(pose(body_tilt_deg=88))
    for step in range(1, 15):  # box only: no keypoints, the detector says Fall
        time_s = (len(sequence) + step) / FPS
        features = posture_features(None, lying_box, 0.8, 0.2)
        types += [e.type for e in machine.update(time_s, features, lying_box.height, detector_seen_since=time_s)]
    assert types == ["fall_detected"]


def test_a_box_without_any_skeleton_never_falls():
    """A detector box alone (a coat that is knocked over) has no skeleton: no fall."""
    config = FallConfig()
    machine = FallStateMachine(config)
    standing, lying = Box(300, 100, 360, 400), Box(200, 340, 500, 400)
    types = []
    for step in range(40):
        box = standing if step < 20 else lying
        features = posture_features(None, box, 0.1 if step < 20 else 0.8, 0.2)
        types += [e.type for e in machine.update(step / FPS, features, box.height, detector_seen_since=step / FPS)]
    # A box says nothing about standing either: no upright baseline forms, so no candidate at all.
    assert types == [] and machine.state in (FallState.UNKNOWN, FallState.LYING) and machine.baseline is None


# -- issue 21: falls that the torso angle alone does not show ----------------------------------


def test_foreshortened_fall_towards_a_high_camera_is_detected():
    """The torso stays under 25 degrees from vertical in the image while the body's height falls
    to a third and the hips drop fast: a fall along the camera's line of sight."""
    toward = ramp(0.7, FPS, toward_camera=0.67) + hold(5.0, FPS, toward_camera=0.67)
    types, machine, events = run(STAND + toward, detector_fall_score=0.7)
    assert max(torso_angle_deg(pose(toward_camera=0.67 * i / 7), 0.2) for i in range(8)) < 25
    assert types == ["fall_detected", "alarm"]
    assert machine.cues.height_ratio == pytest.approx(1 / 3, abs=0.05)
    assert events[0].time_s - 2.7 < 1.0  # confirmed within a second of reaching the floor


def test_squat_and_fast_sit_keep_a_short_body_but_stay_silent():
    """Height collapse alone is not a fall: a deep squat (detector says Fall) and sitting down
    fast both halve the body's height with an upright torso."""
    squat = ramp(0.4, FPS, hip_drop=0.35, knee_forward=0.15) + hold(1.5, FPS, hip_drop=0.35, knee_forward=0.15)
    assert run(STAND + squat + STAND, detector_fall_score=0.75)[0] == []
    sit = ramp(0.3, FPS, hip_drop=0.3, knee_forward=0.2) + hold(8.0, FPS, hip_drop=0.3, knee_forward=0.2)
    assert run(STAND + sit, detector_fall_score=0.3)[0] == []


def test_fall_with_a_very_short_lead_in():
    """The stream starts 0.4 s before the fall (or the person walks in and falls at once)."""
    lead_in = hold(0.4, FPS)
    assert run(lead_in + fall() + lie(5.0))[0] == ["fall_detected", "alarm"]


def test_fall_a_quarter_second_after_the_stream_starts():
    """Three upright frames, then a fast fall: too short for min_upright_s, enough for the quick
    lead-in (the hips drop fast against the brief baseline). Without it, nothing is raised."""
    poses = hold(0.25, FPS) + fall(0.5) + lie(5.0)
    assert run(poses)[0] == ["fall_detected", "alarm"]
    assert run(poses, FallConfig(quick_upright_s=0.0))[0] == []


def test_two_upright_frames_are_enough_for_the_quick_lead_in():
    """Issue 29 (f_xav_bedroomhidden): seen upright on two frames at 10 frames/s (0.1 s apart, which
    index / fps makes 0.0999...), then falling fast behind a bed."""
    poses = hold(0.1, FPS) + fall(0.3) + lie(5.0)
    machine = FallStateMachine(FallConfig())
    events = []
    for index, arguments in enumerate(poses):
        keypoints = pose(**arguments)
        box = box_of(keypoints)
        time_s = (19 + 3 * index) / 30.0  # frame index / fps: a 30 frames/s clip thinned to 10
        events += machine.update(time_s, posture_features(keypoints, box, None, 0.2), box.height, None)
    assert [e.type for e in events] == ["fall_detected", "alarm"]


def test_quick_lead_in_stays_silent_for_fast_sitting_and_for_someone_already_lying():
    sit = ramp(0.3, FPS, hip_drop=0.3, knee_forward=0.2) + hold(8.0, FPS, hip_drop=0.3, knee_forward=0.2)
    assert run(hold(0.25, FPS) + sit, detector_fall_score=0.3)[0] == []
    # lying in bed when the stream starts, then a restless turn: never looked upright
    assert run(lie(2.0) + hold(0.3, FPS, body_tilt_deg=70) + lie(6.0))[0] == []


def test_lost_right_after_a_fast_descent_away_from_the_border_is_a_fall():
    """A small or dim person vanishes from both models once on the floor: the fast descent that
    ended in the lost track is the evidence, decided within the alarm hold."""
    config = FallConfig()
    machine = FallStateMachine(config)
    half_way = ramp(0.4, FPS, body_tilt_deg=60)
    types = [e.type for e in feed(machine, STAND + half_way, 0.0, detector_seen=lambda t: t)]
    last_seen = (len(STAND) + len(half_way) - 1) / FPS
    assert machine.keep_when_lost
    for step in range(1, 60):
        types += [e.type for e in machine.update(last_seen + step / FPS, None, 100.0, detector_seen_since=last_seen)]
    assert types == ["fall_detected", "alarm"]
    # ... but not when the person was last seen at the edge of the picture: they may have left it.
    machine = FallStateMachine(config)
    types = [e.type for e in feed(machine, STAND + half_way, 0.0, detector_seen=lambda t: t)]
    for step in range(1, 60):
        types += [e.type for e in machine.update(last_seen + step / FPS, None, 100.0, last_seen, at_border=True)]
    assert types == []


def test_walking_out_of_sight_is_not_a_fall():
    """A person who walks behind a wall (no descent) and is lost never raises anything."""
    config = FallConfig()
    machine = FallStateMachine(config)
    walk = [{"centre_x": 320 + 10 * i} for i in range(20)]
    types = [e.type for e in feed(machine, STAND + walk)]
    for step in range(1, 60):
        types += [e.type for e in machine.update(4.0 + step / FPS, None, 300.0)]
    assert types == [] and not machine.keep_when_lost


def test_walking_down_the_picture_asks_the_detector_for_nothing():
    """Someone walking towards a high camera moves down the picture and grows: their hips drop
    fast enough to open a candidate, but a body taller than standing is not falling, so the
    detector gets no extra run for it (in a crowd these were most of the extra runs)."""
    machine = FallStateMachine(FallConfig())
    feed(machine, STAND)
    walk = [{"foot_y": 420.0 + 20 * i, "scale": 1.0 + 0.03 * i} for i in range(1, 10)]
    states, wants = [], []
    for index, arguments in enumerate(walk):
        keypoints = pose(**arguments)
        box = box_of(keypoints)
        machine.update(2.0 + index / FPS, posture_features(keypoints, box, None, 0.2), box.height, None)
        states.append(machine.state)
        wants.append(machine.wants_detector(None))
    assert FallState.FALLING in states  # the hips alone do open a candidate
    assert not any(wants)


def test_a_falling_candidate_asks_the_detector_once_until_it_has_looked():
    machine = FallStateMachine(FallConfig())
    feed(machine, STAND)
    wants = []
    for index, arguments in enumerate(fall() + lie(1.0)):
        keypoints = pose(**arguments)
        box = box_of(keypoints)
        time_s = 2.0 + index / FPS
        machine.update(time_s, posture_features(keypoints, box, None, 0.2), box.height, None)
        wanted = machine.wants_detector(None)
        wants.append(wanted)
        if wanted:  # the detector runs: it has looked from now on
            assert not machine.wants_detector(time_s)
    assert any(wants)
    assert not machine.wants_detector(2.0 + len(wants) / FPS)


def feed_with_sequence(poses: List[dict], sequence_score, config: FallConfig = None) -> tuple:
    machine = FallStateMachine(config or FallConfig())
    events: List[Transition] = []
    for index, arguments in enumerate(poses):
        keypoints = pose(**arguments)
        box = box_of(keypoints)
        features = posture_features(keypoints, box, None, 0.2)
        events += machine.update(index / FPS, features, box.height, None, sequence_score=sequence_score)
    return [e.type for e in events], machine


def test_the_sequence_cue_vetoes_a_controlled_movement_and_only_that():
    poses = STAND + fall() + lie(5.0)
    vetoed, machine = feed_with_sequence(poses, 0.05)
    assert vetoed == [] and machine.state in (FallState.FALLING, FallState.LYING)
    _, moments_later = feed_with_sequence(STAND + fall() + lie(1.0), 0.05)
    assert "sequence cue 0.05 < 0.30" in moments_later.why  # --trace says why
    assert feed_with_sequence(poses, 0.9)[0] == ["fall_detected", "alarm"]
    assert feed_with_sequence(poses, None)[0] == ["fall_detected", "alarm"]  # no scores: no say
    off = FallConfig(sequence_confirm_min=0.0)
    assert feed_with_sequence(poses, 0.05, off)[0] == ["fall_detected", "alarm"]


def test_the_veto_looks_at_the_whole_window_not_the_last_frame():
    """Once lying still, the window no longer holds the fall and the cue drops: a high score in the
    last sequence_window_s still counts."""
    poses = STAND + fall() + lie(5.0)
    machine = FallStateMachine(FallConfig())
    kinds = []
    for index, arguments in enumerate(poses):
        keypoints = pose(**arguments)
        box = box_of(keypoints)
        time_s = index / FPS
        score = 0.95 if 2.0 <= time_s <= 2.8 else 0.02  # high only while the body goes down
        kinds += [e.type for e in machine.update(time_s, posture_features(keypoints, box, None, 0.2), box.height,
                                                 None, sequence_score=score)]
    assert kinds == ["fall_detected", "alarm"]


SEATED = dict(hip_drop=0.3, knee_forward=0.2)


def test_a_fall_from_a_seat_is_measured_against_the_seated_posture():
    """Issue 29 (hqfsd_fall30_cam3): seated in an armchair when the stream starts, then falling
    forward out of it, away from a high camera: the hips end higher in the picture than they sat
    (descent about -1), which against any baseline's hip drop reads as "not down"."""
    seated = hold(3.0, FPS, **SEATED)
    out_of_the_chair = [dict(SEATED, body_tilt_deg=85.0 * k / 6, foot_y=FOOT_Y - 160.0 * k / 6) for k in range(1, 7)]
    on_the_floor = hold(6.0, FPS, body_tilt_deg=85.0, foot_y=FOOT_Y - 160.0, **SEATED)
    types, machine, _ = run(seated + out_of_the_chair + on_the_floor, detector_fall_score=0.7)
    assert types == ["fall_detected", "alarm"]
    assert machine.baseline is not None and machine.baseline.seated
    assert machine.cues.descent < -0.5  # the hips rose in the picture


def test_a_seated_person_leaning_to_the_floor_stays_silent():
    """Picking something up from a chair: the torso goes to 60 degrees and the detector says Fall
    (0.6 seen on a seated lean), but the hips stay on the seat."""
    lean = ramp(0.6, FPS, torso_bend_deg=60.0, **SEATED) + hold(2.0, FPS, torso_bend_deg=60.0, **SEATED)
    back = ramp(0.6, FPS, **SEATED) + hold(3.0, FPS, **SEATED)
    types, machine, _ = run(STAND + ramp(0.5, FPS, **SEATED) + hold(3.0, FPS, **SEATED) + lean + back,
                            detector_fall_score=0.6)
    assert types == []


def test_a_detector_box_after_the_skeleton_is_lost_does_not_restart_the_wait():
    """A small person goes down fast and the pose model loses them on the floor; the detector,
    which runs every few frames, still boxes them there. That box says nothing about standing up:
    the fall is confirmed once the skeleton has been gone for lost_confirm_s."""
    config = FallConfig()
    machine = FallStateMachine(config)
    # Lost half way down (the lying score 0.5: not yet lying, so only the lost rule can confirm).
    half_way = ramp(0.4, FPS, body_tilt_deg=58)
    types = [e.type for e in feed(machine, STAND + half_way, 0.0, detector_seen=lambda t: t)]
    assert not machine.lying and machine.max_descent >= config.lost_min_descent
    last_seen = (len(STAND) + len(half_way) - 1) / FPS
    # A squarish box where they went down, scored lying 0.25 at most: under lying_exit, so these
    # boxes alone never confirm the fall, and they come too often for a lost track's wait.
    floor_box = Box(280, FOOT_Y - 120, 400, FOOT_Y)
    assert lying_score(None, floor_box.width / floor_box.height, 0.4, config) < config.lying_exit
    confirmed_at = None
    for step in range(1, 40):
        time_s = last_seen + step / FPS
        detector_box = step % 6 == 0  # the detector's box, no keypoints, every 0.6 s
        features = posture_features(None, floor_box, 0.4, 0.2) if detector_box else None
        for event in machine.update(time_s, features, floor_box.height, detector_seen_since=last_seen):
            types.append(event.type)
            confirmed_at = time_s if confirmed_at is None else confirmed_at
    assert types[:1] == ["fall_detected"]
    assert confirmed_at - last_seen == pytest.approx(config.lost_confirm_s, abs=0.15)

"""The tracker keeps one id through a fall and never lets a detector box steal a person's track."""

import numpy as np
from skeletons import CENTRE_X, FOOT_Y, HEIGHT, box_of, pose

from edge.config import FallConfig, TrackerConfig
from edge.tracking.tracker import Tracker
from edge.types import Box, Observation, Person


def person_at(**arguments) -> Observation:
    keypoints = pose(**arguments)
    box = box_of(keypoints)
    return Observation(box=box, person=Person(box=box, score=0.8, keypoints=keypoints))


def test_a_falling_person_keeps_one_track_id():
    tracker = Tracker(TrackerConfig(), FallConfig())
    ids = set()
    for step in range(12):  # standing to lying in 12 frames: the box turns from tall to wide
        tracks = tracker.update([person_at(body_tilt_deg=88 * step / 11)], step / 10)
        ids |= {t.track_id for t in tracks}
    assert ids == {1}


def test_two_people_keep_their_ids_when_they_cross():
    tracker = Tracker(TrackerConfig(), FallConfig())
    for step in range(20):
        left = person_at(centre_x=100 + step * 20)
        right = person_at(centre_x=500 - step * 20)
        tracks = tracker.update([left, right], step / 10)
    by_id = {t.track_id: t.box.center[0] for t in tracks}
    assert by_id[1] > by_id[2]  # track 1 started on the left and walked right


def test_a_detector_box_nearby_does_not_take_over_a_person():
    tracker = Tracker(TrackerConfig(), FallConfig())
    coat = Observation(box=Box(10, 100, 70, 400))  # a detector box with no pose
    tracker.update([person_at(), coat], 0.0)
    # The person's pose jumps (a bad frame), landing near the coat: the coat's track must not absorb it.
    moved = person_at(centre_x=150)
    tracks = tracker.update([moved, coat], 0.1)
    person_track = next(t for t in tracks if t.track_id == 1)
    coat_track = next(t for t in tracks if t.track_id == 2)
    assert person_track.box == moved.box
    assert coat_track.person is None


def test_tracks_age_out_but_people_lying_down_are_kept_longer():
    config = TrackerConfig(max_age_s=1.0, down_max_age_s=10.0)
    tracker = Tracker(config, FallConfig())
    tracker.update([person_at()], 0.0)
    assert tracker.update([], 0.9) and not tracker.update([], 1.1)
    lying = Tracker(config, FallConfig())
    track = lying.update([person_at(body_tilt_deg=88)], 0.0)[0]
    track.fall.state = track.fall.state.DOWN  # as the state machine leaves it after a fall
    assert lying.update([], 5.0) and not lying.update([], 10.5)


def test_observations_far_apart_start_new_tracks():
    tracker = Tracker(TrackerConfig(), FallConfig())
    tracker.update([person_at(centre_x=100)], 0.0)
    tracks = tracker.update([person_at(centre_x=600)], 0.1)
    assert sorted(t.track_id for t in tracks) == [1, 2]
    assert np.isclose(tracks[1].box.center[0], 600, atol=60)


def run_falls(tracker: Tracker, frames: list, fps: float = 10.0) -> list:
    """Observations per frame through the real tracker and every track's fall state machine."""
    events = []
    for index, observations in enumerate(frames):
        time_s = index / fps
        tracker.update(observations, time_s)
        events += [(track.track_id, t.type)
                   for track, t in tracker.advance_falls(time_s, 0.2, detector_enabled=False, frame_size=(640, 640))]
    return events


def stumble_towards_the_camera() -> list:
    """Stands 2 s, starts to tip over, is lost by the pose model for 0.3 s, and is found lying
    foreshortened closer to the camera: too far from the last box for IoU or the centre rule."""
    standing = [[person_at()] for _ in range(20)]
    tipping = [[person_at(body_tilt_deg=35 * (i + 1) / 3)] for i in range(3)]
    lost = [[] for _ in range(3)]
    lying = [[person_at(toward_camera=0.75, foot_y=540.0)] for _ in range(60)]
    return standing + tipping + lost + lying


def test_a_fall_survives_the_identity_switch_to_a_new_track_on_the_floor():
    frames = stumble_towards_the_camera()
    tracker = Tracker(TrackerConfig(), FallConfig())
    events = run_falls(tracker, frames)
    assert events == [(1, "fall_detected"), (1, "alarm")]  # one chain, on the track that stood
    assert [t.track_id for t in tracker.tracks] == [1] and tracker.tracks[0].handovers == 1
    # Without the handover the person on the floor is a new track with no baseline: no alarm.
    no_handover = Tracker(TrackerConfig(handover_reach=0.0), FallConfig())
    assert run_falls(no_handover, frames) == []
    assert {t.track_id for t in no_handover.tracks} == {2}


def test_found_lying_head_first_towards_a_high_camera_as_tall_as_standing_continues_the_track():
    """The picture freezes mid-fall (frames dropped) and shows the person already down, head
    towards the camera and feet where their chest was: the box is almost as tall as standing, but
    the torso points down the picture, so it is the fallen person, not somebody else."""
    lying_pose = {"body_tilt_deg": 160, "knee_forward": 0.2, "foot_y": FOOT_Y - 0.7 * HEIGHT,
                  "centre_x": CENTRE_X + 0.8 * HEIGHT}
    assert box_of(pose(**lying_pose)).height >= 0.9 * HEIGHT
    frames = [[person_at()] for _ in range(20)] + [[] for _ in range(3)]
    frames += [[person_at(**lying_pose)] for _ in range(60)]
    tracker = Tracker(TrackerConfig(), FallConfig())
    events = []
    for index, observations in enumerate(frames):
        time_s = index / 10.0
        for track in tracker.update(observations, time_s):
            # the detector's Fall score, as the pipeline sets it: it sees someone lying once down
            track.set_detector_score(0.9 if index >= 23 else 0.0, time_s)
        events += [(track.track_id, t.type)
                   for track, t in tracker.advance_falls(time_s, 0.2, detector_enabled=True, frame_size=(1280, 960))]
    assert [t.track_id for t in tracker.tracks] == [1] and tracker.tracks[0].handovers == 1
    assert events == [(1, "fall_detected"), (1, "alarm")]


def test_a_bare_detector_box_whose_crop_finds_the_fallen_person_continues_their_track():
    """The pose model lost the person mid-fall; the detector's box on the floor starts a new track
    and the crop pass finds the skeleton in it on that same frame: still the same person."""
    tracker = Tracker(TrackerConfig(), FallConfig())
    for index in range(20):
        tracker.update([person_at()], index / 10.0)
        tracker.advance_falls(index / 10.0, 0.2, detector_enabled=False, frame_size=(1280, 960))
    lying = person_at(body_tilt_deg=88, centre_x=CENTRE_X + 0.2 * HEIGHT)
    time_s = 2.3
    floor_box = Observation(box=lying.box)  # the detector's box of the person on the floor
    tracks = tracker.update([floor_box], time_s)
    new = next(t for t in tracks if t.track_id != 1)
    new.observe(lying, time_s)  # what the crop pass does
    tracker.continue_fallen(time_s)
    assert [t.track_id for t in tracker.tracks] == [1]
    assert tracker.tracks[0].handovers == 1 and tracker.tracks[0].person is lying.person


def test_a_second_person_standing_nearby_does_not_inherit_a_fall():
    """Someone standing (as tall as the person who left) is never handed another's history."""
    tracker = Tracker(TrackerConfig(), FallConfig())
    frames = [[person_at()] for _ in range(20)] + [[] for _ in range(3)]
    frames += [[person_at(centre_x=570, hip_drop=0.05)] for _ in range(30)]  # within reach, too tall
    run_falls(tracker, frames)
    assert {t.track_id for t in tracker.tracks} == {2}


def test_one_person_found_twice_keeps_only_the_longer_track():
    """The whole-frame pass and a crop pass can each hand the same skeleton to a different track;
    the younger duplicate would otherwise drift onto a mat or chair at the person's feet."""
    tracker = Tracker(TrackerConfig(), FallConfig())
    walker, other = person_at(), person_at(centre_x=CENTRE_X + 300)
    for step in range(5):
        tracker.update([walker, other], step / 10)
    # A second, younger track picks up the same person (as a crop pass would).
    duplicate = tracker._start(person_at(centre_x=CENTRE_X + 3), 0.5)
    tracker.update([walker, other], 0.5)
    duplicate.observe(person_at(centre_x=CENTRE_X + 3), 0.5)
    tracker.drop_duplicates(0.5)
    assert sorted(t.track_id for t in tracker.tracks) == [1, 2]  # the person across the room stays


def test_a_track_is_drawn_only_after_min_hits_observations():
    """tracker.min_hits: a person seen once (a one-frame blip) is neither drawn nor counted as
    tracked; from the second observation on they are."""
    from edge.types import Frame, FrameResult
    from edge.viz.draw import draw_result

    tracker = Tracker(TrackerConfig(min_hits=2), FallConfig())
    image = np.zeros((480, 640, 3), np.uint8)

    def drawn(tracks) -> int:
        result = FrameResult(frame=Frame(image, 0, 0.0), tracks=list(tracks), events=[], detector_ran=False,
                             min_hits=2)
        return int((draw_result(result) != 0).any(axis=2)[:440].sum())  # above the time stamp

    first = tracker.update([person_at()], 0.0)
    assert len(first) == 1 and tracker.confirmed() == [] and drawn(first) == 0
    second = tracker.update([person_at()], 0.1)
    assert tracker.confirmed() == second and drawn(second) > 500  # box, labels and skeleton


def lowering(seconds: float, fps: float = 10.0, helper_x=None, fall_s: float = None) -> list:
    """Stands 2 s, is lowered (or falls, over fall_s) to lying on the floor and stays there 6 s;
    with helper_x, a second person stands beside them there throughout, bending a little while
    the first goes down."""
    steps = int((fall_s or seconds) * fps)
    frames = [[person_at()] for _ in range(20)]
    frames += [[person_at(body_tilt_deg=-88 * (i + 1) / steps)] for i in range(steps)]
    frames += [[person_at(body_tilt_deg=-88)] for _ in range(60)]
    if helper_x is not None:
        for index, frame in enumerate(frames):
            bending = 20 <= index < 20 + steps
            frame.append(person_at(centre_x=helper_x, torso_bend_deg=25.0 if bending else 0.0))
    return frames


def test_a_person_lowered_to_the_floor_by_a_carer_is_not_a_fall():
    """A transfer: a carer standing beside someone lowers them to the floor over 4 s. The same
    slow lowering with nobody beside them is a collapse and alarms; a fast fall beside a
    bystander alarms too."""
    helped = run_falls(Tracker(TrackerConfig(), FallConfig()), lowering(4.0, helper_x=CENTRE_X + 80))
    assert helped == []
    alone = run_falls(Tracker(TrackerConfig(), FallConfig()), lowering(4.0))
    assert alone == [(1, "fall_detected"), (1, "alarm")]
    beside_a_fall = run_falls(Tracker(TrackerConfig(), FallConfig()),
                              lowering(4.0, helper_x=CENTRE_X + 80, fall_s=0.7))
    assert beside_a_fall == [(1, "fall_detected"), (1, "alarm")]
    # The rule is the config's: off, the transfer alarms like the collapse alone.
    rule_off = run_falls(Tracker(TrackerConfig(), FallConfig(helper_reach=0.0)),
                         lowering(4.0, helper_x=CENTRE_X + 80))
    assert rule_off == [(1, "fall_detected"), (1, "alarm")]

"""The tracker keeps one id through a fall and never lets a detector box steal a person's track."""

import numpy as np
from skeletons import box_of, pose

from edge.config import FallConfig, TrackerConfig
from edge.tracking.tracker import Tracker
from edge.types import Box, Detection, Observation, Person


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
    coat = Observation(box=Box(10, 100, 70, 400), detection=Detection(Box(10, 100, 70, 400), 0.5, 0, "Normal"))
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

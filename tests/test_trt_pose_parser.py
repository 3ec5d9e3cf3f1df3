"""The trt_pose cmap/paf parser on synthetic maps that encode known skeletons.

The maps are drawn here the way trt_pose's training targets are: a Gaussian per part, and a
unit vector field along each limb (channel 2k = row component, 2k+1 = column component)."""

import numpy as np
import pytest

from edge.decoding.trt_pose import (
    PAF_CHANNELS,
    TRT_POSE_LIMBS,
    ParseSettings,
    assign_limb,
    find_peaks,
    parse_trt_pose,
    refine_peaks,
)
from edge.types import KEYPOINT_INDEX, NUM_KEYPOINTS

H = W = 56  # trt_pose's map size for a 224x224 input


def standing_person(x_center: float, top: float, height: float) -> np.ndarray:
    """[18, 2] (x, y) in map pixels of an upright person."""
    s = height / 8.0
    points = {
        "nose": (0, 0.3), "left_eye": (0.3, 0.1), "right_eye": (-0.3, 0.1), "left_ear": (0.6, 0.3),
        "right_ear": (-0.6, 0.3), "neck": (0, 1.1), "left_shoulder": (1.0, 1.2), "right_shoulder": (-1.0, 1.2),
        "left_elbow": (1.3, 2.5), "right_elbow": (-1.3, 2.5), "left_wrist": (1.4, 3.6), "right_wrist": (-1.4, 3.6),
        "left_hip": (0.7, 4.0), "right_hip": (-0.7, 4.0), "left_knee": (0.7, 5.8), "right_knee": (-0.7, 5.8),
        "left_ankle": (0.7, 7.6), "right_ankle": (-0.7, 7.6),
    }
    xy = np.zeros((NUM_KEYPOINTS, 2), dtype=np.float32)
    for name, (dx, dy) in points.items():
        xy[KEYPOINT_INDEX[name]] = (x_center + dx * s, top + dy * s)
    return xy


def draw_maps(people, sigma=1.0, paf_width=1.0):
    """cmap [18,H,W] and paf [42,H,W] for people given as [18,2] (x, y) map-pixel arrays."""
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32) + 0.5  # pixel centres
    cmap = np.zeros((NUM_KEYPOINTS, H, W), np.float32)
    paf = np.zeros((PAF_CHANNELS, H, W), np.float32)
    for xy in people:
        for part, (x, y) in enumerate(xy):
            cmap[part] = np.maximum(cmap[part], np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2)))
        for k, (a, b) in enumerate(TRT_POSE_LIMBS):
            (ax, ay), (bx, by) = xy[a], xy[b]
            length = np.hypot(bx - ax, by - ay) + 1e-6
            uy, ux = (by - ay) / length, (bx - ax) / length
            along = (rows - ay) * uy + (cols - ax) * ux
            across = (rows - ay) * ux - (cols - ax) * uy
            outside = np.where(along < 0, along, np.where(along > length, along - length, 0.0))
            weight = np.exp(-(outside**2 + across**2) / paf_width**2)
            paf[2 * k] += weight * uy
            paf[2 * k + 1] += weight * ux
    return cmap, paf


def match_people(found, truth):
    """For each true person, the found person whose keypoints are nearest (mean distance, px)."""
    result = []
    for xy in truth:
        distances = [np.abs(person[:, :2] * [W, H] - xy).max() for person in found]
        result.append((int(np.argmin(distances)), float(min(distances))))
    return result


def test_peaks_and_subpixel_refinement():
    cmap, _ = draw_maps([standing_person(28.3, 8.0, 40.0)])
    truth = standing_person(28.3, 8.0, 40.0)
    for part in range(NUM_KEYPOINTS):
        peaks = find_peaks(cmap[part], 0.1, 5, 100)
        assert len(peaks) == 1
        y, x = refine_peaks(cmap[part], peaks, 5)[0]
        assert abs(x * W - truth[part, 0]) < 0.15 and abs(y * H - truth[part, 1]) < 0.15


def test_peak_window_and_threshold():
    part_map = np.zeros((20, 20), np.float32)
    part_map[5, 5], part_map[5, 7], part_map[15, 15], part_map[2, 17] = 0.9, 0.5, 0.3, 0.05
    peaks = find_peaks(part_map, threshold=0.1, window=5, max_peaks=10).tolist()
    assert peaks == [[5, 5], [15, 15]]  # (5,7) is inside (5,5)'s window; (2,17) is below threshold
    assert find_peaks(part_map, 0.1, 3, 10).tolist() == [[5, 5], [5, 7], [15, 15]]
    assert find_peaks(part_map, 0.1, 3, 2).tolist() == [[5, 5], [5, 7]]


def test_assignment_is_one_to_one_and_thresholded():
    scores = np.array([[0.9, 0.8], [0.85, 0.05]], np.float32)
    assert sorted(assign_limb(scores, 0.1)) == [(0, 1), (1, 0)]  # 0.8 + 0.85 beats 0.9 + 0.05
    assert assign_limb(np.array([[0.05]]), 0.1) == []


def test_one_person_every_part():
    truth = standing_person(28.0, 6.0, 44.0)
    people = parse_trt_pose(*draw_maps([truth]))
    assert len(people) == 1
    person = people[0]
    assert (person[:, 2] > 0.75).all()  # the cmap value at the peak pixel
    assert np.abs(person[:, :2] * [W, H] - truth).max() < 0.2


def test_two_people_close_together_are_kept_apart():
    # Shoulder to shoulder: 5 map pixels between the nearest wrists at 56x56.
    left, right = standing_person(20.0, 6.0, 44.0), standing_person(33.0, 8.0, 42.0)
    people = parse_trt_pose(*draw_maps([left, right]))
    assert len(people) == 2
    matches = match_people(people, [left, right])
    assert {index for index, _ in matches} == {0, 1}
    assert all(distance < 0.3 for _, distance in matches)


def test_a_lying_person_and_a_standing_one():
    standing = standing_person(12.0, 4.0, 40.0)
    lying = standing_person(0.0, 0.0, 30.0)[:, ::-1] + [23.0, 47.0]  # rotated: head to the left, on the floor
    people = parse_trt_pose(*draw_maps([standing, lying]))
    assert len(people) == 2
    matches = match_people(people, [standing, lying])
    assert {index for index, _ in matches} == {0, 1} and all(d < 0.3 for _, d in matches)


def test_a_missing_part_is_zero_and_weak_people_are_dropped():
    truth = standing_person(28.0, 6.0, 44.0)
    cmap, paf = draw_maps([truth])
    cmap[KEYPOINT_INDEX["left_wrist"]] = 0  # occluded wrist
    person = parse_trt_pose(cmap, paf)[0]
    assert person[KEYPOINT_INDEX["left_wrist"]].tolist() == [0, 0, 0]
    assert person[KEYPOINT_INDEX["left_elbow"], 2] > 0.9
    lone = np.zeros_like(cmap)
    lone[KEYPOINT_INDEX["nose"], 10, 10] = 1.0  # a single part with no limbs is not a person
    assert parse_trt_pose(lone, np.zeros_like(paf)) == []


def test_paf_direction_matters():
    """A PAF pointing the wrong way gives negative scores: the limbs are not linked."""
    truth = standing_person(28.0, 6.0, 44.0)
    cmap, paf = draw_maps([truth])
    people = parse_trt_pose(cmap, -paf, min_parts=1)
    assert len(people) == NUM_KEYPOINTS  # every part on its own, none linked


def test_batch_dimension_and_bad_shapes():
    cmap, paf = draw_maps([standing_person(28.0, 6.0, 44.0)])
    assert len(parse_trt_pose(cmap[None], paf[None], ParseSettings(cmap_threshold=0.2))) == 1
    with pytest.raises(ValueError, match="cmap \\[18,H,W\\] and paf \\[42,H,W\\]"):
        parse_trt_pose(cmap[:17], paf)

"""Letterboxing, YOLO decoding/NMS and MoveNet decoding, on the real models' real outputs."""

import cv2
import numpy as np
import pytest
from conftest import skimage_bgr

from edge.daemon.pipeline import person_boxes
from edge.decoding.letterbox import crop_letterbox, ensure_bgr, letterbox, square_crop_box
from edge.decoding.yolo import decode_yolo, detect_layout
from edge.fall.features import torso_angle_deg
from edge.geometry import nms
from edge.types import KEYPOINT_INDEX, Box


def test_letterbox_maps_points_back_to_the_frame():
    frame = np.zeros((480, 640, 3), np.uint8)
    canvas, transform = letterbox(frame, 256)
    assert canvas.shape == (256, 256, 3)
    # A frame point, projected into the canvas by hand, must come back where it was.
    point = np.array([[500.0, 100.0]])
    projected = point * transform.scale + [transform.pad_x, transform.pad_y]
    np.testing.assert_allclose(transform.to_frame_xy(projected), point, atol=1e-3)


def test_crop_letterbox_keeps_frame_coordinates_and_pads_outside():
    frame = np.full((300, 400, 3), 7, np.uint8)
    region = square_crop_box(Box(350, 10, 390, 90), margin=0.5, frame_w=400, frame_h=300)
    assert region.x2 <= 400 + 1e-6 and region.y1 >= 0
    outside = Box(-50, -50, 50, 50)  # half outside the frame: grey there, frame pixels inside
    canvas, transform = crop_letterbox(frame, outside, 100)
    assert canvas[10, 10].tolist() == [114, 114, 114] and canvas[90, 90].tolist() == [7, 7, 7]
    np.testing.assert_allclose(transform.to_frame_xy(np.array([[50.0, 50.0]])), [[0.0, 0.0]], atol=1e-3)


def test_ensure_bgr_accepts_grey_bgra_and_float():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert ensure_bgr(grey).shape == (3, 4, 3)
    assert ensure_bgr(np.zeros((3, 4, 4), np.uint8)).shape == (3, 4, 3)
    assert ensure_bgr(np.ones((3, 4, 3), np.float32)).max() == 255
    with pytest.raises(ValueError):
        ensure_bgr(np.zeros((0, 0, 3), np.uint8))


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=float)
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.45) == [1, 2]


def _raw_output(detector, image):
    tensor, transform = detector.preprocess(image)
    return detector.backend.infer(tensor)[0], transform


def test_yolo_finds_the_cameraman_upright(models):
    image = ensure_bgr(skimage_bgr("camera"))  # greyscale input on purpose
    detections = models.detector.detect(image)
    assert detections, "the fall model should see the cameraman"
    best = max(detections, key=lambda d: d.score)
    assert best.label == "Normal" and best.score > 0.5
    # The box is in frame pixels and covers the man (left half of the picture, most of its height).
    assert 0 <= best.box.x1 < best.box.x2 <= 512 and 0 <= best.box.y1 < best.box.y2 <= 512
    assert best.box.height > 300 and best.box.center[0] < 256


def test_yolo_on_the_rotated_cameraman_keeps_normal_and_fall_boxes(models):
    image = cv2.rotate(ensure_bgr(skimage_bgr("camera")), cv2.ROTATE_90_CLOCKWISE)
    detections = models.detector.detect(image)
    labels = {d.label for d in detections}
    # Class-aware NMS: the Fall box is not suppressed by the overlapping Normal box.
    assert "Fall" in labels
    merged = person_boxes(detections, models.detector.fall_class_id)
    assert len(merged) < len(detections) or len(detections) == 1
    fall_scores = [d.class_scores[1] for d in merged]
    upright = models.detector.detect(ensure_bgr(skimage_bgr("camera")))
    assert max(fall_scores) > max(d.class_scores[1] for d in upright) + 0.2


def test_yolov5_layout_decodes_the_same_boxes(models):
    """The same real head written in YOLOv5's [1, N, 5+nc] layout (objectness 1) decodes identically."""
    image = ensure_bgr(skimage_bgr("camera"))
    raw, transform = _raw_output(models.detector, image)
    assert detect_layout(raw, 2) == "yolov8"
    rows = raw[0].T
    as_v5 = np.concatenate([rows[:, :4], np.ones((rows.shape[0], 1), np.float32), rows[:, 4:]], axis=1)[None]
    assert detect_layout(as_v5, 2) == "yolov5"
    names = ["Normal", "Fall"]
    v8 = decode_yolo(raw, names, transform, "auto", 0.3, 0.45, 512, 512)
    v5 = decode_yolo(as_v5, names, transform, "auto", 0.3, 0.45, 512, 512)
    assert [(d.label, d.box) for d in v8] == [(d.label, d.box) for d in v5]
    with pytest.raises(ValueError, match="fits neither"):
        detect_layout(raw, 3)


def test_yolo_boxes_follow_the_letterbox(models):
    """Padding the picture on the left moves every box right by the same amount."""
    image = ensure_bgr(skimage_bgr("camera"))
    padded = cv2.copyMakeBorder(image, 0, 0, 200, 0, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    plain = max(models.detector.detect(image), key=lambda d: d.score)
    shifted = max(models.detector.detect(padded), key=lambda d: d.score)
    assert shifted.box.x1 - plain.box.x1 == pytest.approx(200, abs=12)
    assert shifted.box.y2 == pytest.approx(plain.box.y2, abs=12)


def test_movenet_skeleton_is_in_frame_pixels_with_a_neck(models, vtest_frames):
    frame = vtest_frames[60]
    people = models.pose.estimate(frame)
    assert people, "MoveNet should find someone in vtest frame 60"
    for person in people:
        kp = person.keypoints
        assert kp.shape == (18, 3)
        shoulders = kp[[KEYPOINT_INDEX["left_shoulder"], KEYPOINT_INDEX["right_shoulder"]], :2]
        np.testing.assert_allclose(kp[KEYPOINT_INDEX["neck"], :2], shoulders.mean(axis=0))
        confident = kp[kp[:, 2] > 0.3]
        assert (confident[:, 0] >= -5).all() and (confident[:, 0] <= 768 + 5).all()
        assert (confident[:, 1] >= -5).all() and (confident[:, 1] <= 576 + 5).all()
        assert person.box.x1 <= confident[:, 0].min() + 1e-3 and person.box.x2 >= confident[:, 0].max() - 1e-3


def test_movenet_torso_upright_then_horizontal_when_rotated(models, vtest_person_crops):
    measured = 0
    for crop in vtest_person_crops:
        upright = [torso_angle_deg(p.keypoints, 0.2) for p in models.pose.estimate(crop)]
        rotated = [torso_angle_deg(p.keypoints, 0.2) for p in models.pose.estimate(cv2.rotate(crop, 0))]
        upright = [a for a in upright if a is not None]
        rotated = [a for a in rotated if a is not None]
        if not upright or not rotated:
            continue
        measured += 1
        assert min(upright) < 25, f"walking person measured at {upright} degrees"
        assert max(rotated) > 65, f"same person rotated 90 degrees measured at {rotated} degrees"
    assert measured >= 2


def test_crop_pose_keypoints_are_mapped_back_to_frame_pixels(models, vtest_frames):
    """estimate_in(frame, region) must equal estimate(region's pixels) shifted by the region's origin."""
    frame = vtest_frames[60]
    region = Box(426, 163, 592, 329)  # two walkers, each under 1/5 of the frame height
    by_crop = models.pose.estimate_in(frame, region)
    cut = frame[163:329, 426:592]
    by_hand = models.pose.estimate(cut)
    assert len(by_crop) == len(by_hand) >= 2
    for a, b in zip(by_crop, by_hand):
        np.testing.assert_allclose(a.keypoints[:, :2], b.keypoints[:, :2] + [426, 163], atol=0.05)
        np.testing.assert_allclose(a.keypoints[:, 2], b.keypoints[:, 2])

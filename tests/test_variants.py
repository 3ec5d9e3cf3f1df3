"""The eval's harder variants: pure transforms on real frames, and the plan each variant makes."""

import numpy as np
import pytest

from edge.errors import FallEdgeError
from edge.eval.variants import (
    CUT_LEAD_S,
    DROP_FREEZE_S,
    VARIANTS,
    ClipSketch,
    dim_image,
    lower_half,
    parse_variants,
    plan_variant,
    select_frames,
    shrink_onto_canvas,
    small_scale,
    transform_frame,
)
from edge.types import Box, Detection, Frame


def clip(frames: list, fps: float = 20.0):
    return iter(Frame(image=image, index=i, time_s=i / fps) for i, image in enumerate(frames))


def test_parse_variants():
    assert parse_variants("all") == list(VARIANTS)
    assert parse_variants("dim, small,dim") == ["dim", "small"]
    with pytest.raises(FallEdgeError, match="unknown variant 'blur'"):
        parse_variants("dim,blur")


def test_dim_darkens_adds_seeded_noise_and_keeps_the_frame_shape(vtest_frames):
    frame = vtest_frames[0]
    dark = dim_image(frame, seed=3)
    assert dark.shape == frame.shape and dark.dtype == np.uint8
    assert dark.mean() < 0.35 * frame.mean()  # gamma 2.2 and exposure x0.35
    assert np.array_equal(dark, dim_image(frame, seed=3))  # deterministic
    assert not np.array_equal(dark, dim_image(frame, seed=4))  # the noise changes from frame to frame
    noise = dark.astype(float) - dim_image(np.zeros_like(frame) + 128, seed=3).astype(float)
    assert noise.std() > 0


def test_small_shrinks_the_picture_to_a_sixth_on_a_canvas_of_the_same_size(vtest_frames):
    assert small_scale(0.5) == pytest.approx(1 / 3)
    assert small_scale(0.1) == 1.0 and small_scale(None) == 1.0
    frame = vtest_frames[0]
    canvas = shrink_onto_canvas(frame, 0.5, (1, 2, 3))
    assert canvas.shape == frame.shape
    height, width = frame.shape[:2]
    assert (canvas[0, 0] == (1, 2, 3)).all()  # filled around the picture
    centre = canvas[height // 4:height // 4 + height // 2, width // 4:width // 4 + width // 2]
    assert np.abs(centre.astype(int).mean() - frame.mean()) < 10


def test_cut_restarts_the_clock_just_before_the_fall():
    plan = plan_variant("cut", None, 10.0, 3.0, lambda image: [], 1)
    assert plan.cut_start_s == pytest.approx(3.0 - CUT_LEAD_S)
    assert plan.label_start(3.0) == pytest.approx(CUT_LEAD_S)
    images = [np.full((4, 4, 3), i, np.uint8) for i in range(100)]
    kept = list(select_frames(plan, clip(images)))
    assert kept[0].time_s == pytest.approx(0.0) and kept[0].index == 0
    assert kept[0].image[0, 0, 0] == 52  # 2.6 s at 20 fps
    nofall = plan_variant("cut", None, 9.0, None, lambda image: [], 1)
    assert nofall.cut_start_s == pytest.approx(3.0)  # a third of the way in


def test_drop_skips_every_other_frame_and_freezes_during_the_fall():
    plan = plan_variant("drop", None, 10.0, 2.0, lambda image: [], 1)
    images = [np.full((4, 4, 3), i, np.uint8) for i in range(100)]
    kept = list(select_frames(plan, clip(images)))
    assert len(kept) == 50 and all(f.index % 2 == 0 for f in kept)
    frozen = [f for f in kept if plan.freeze_from_s <= f.time_s < plan.freeze_from_s + DROP_FREEZE_S]
    assert len(frozen) >= 2 and len({int(f.image[0, 0, 0]) for f in frozen}) == 1
    assert kept[-1].image[0, 0, 0] == 98  # the picture moves again after the freeze


def test_occlude_covers_the_lower_half_of_the_final_position_with_background():
    background = np.full((120, 160, 3), 50, np.uint8)
    standing, lying = background.copy(), background.copy()
    standing[20:100, 70:90] = 200  # a person standing
    lying[80:100, 40:120] = 200  # ... and on the floor at the end
    person = Detection(Box(40, 80, 120, 100), 0.9, 1, "Fall", (0.1, 0.9))
    sketch = ClipSketch(duration_s=5.0, first=standing, last=lying, before_event=[background, standing, background])
    plan = plan_variant("occlude", sketch, 5.0, 2.0, lambda image: [person], 1)
    assert plan.occluder == lower_half(person.box, 160, 120) == Box(40, 90, 120, 100)
    before = transform_frame(plan, Frame(lying, 0, 2.5))
    after = transform_frame(plan, Frame(lying, 0, 3.5))
    assert np.array_equal(before.image, lying)  # not yet: the person is still falling
    assert (after.image[90:100, 40:120] == 50).all() and (after.image[80:90, 40:120] == 200).all()
    nobody = plan_variant("occlude", sketch, 5.0, 2.0, lambda image: [], 1)
    assert nobody.occluder is None and "nobody found" in nobody.note


# -- on a real clip: what each variant's output frames measure ----------------------------------

REAL_CLIP = "gmdcsa24_s3_fall20.mp4"  # 640x480, 15 fps, a fall at 2.3 s


def variant_frames(clips_dir, models, variant):
    from edge.capture.opencv_source import OpenCvSource
    from edge.eval.evaluate import list_jobs, plan_job

    job = next(j for j in list_jobs([clips_dir], None, [variant]) if j.clip.name == REAL_CLIP)
    plan = plan_job(job, models)
    with OpenCvSource(str(job.clip)) as video:
        source = list(video.frames())
        return plan, source, [transform_frame(plan, f) for f in select_frames(plan, iter(source))]


def digest(frames):
    import hashlib

    h = hashlib.sha256()
    for frame in frames:
        h.update(frame.image.tobytes())
        h.update(f"{frame.index}:{frame.time_s:.6f}".encode())
    return h.hexdigest()


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "plain"])
def test_each_variant_gives_the_same_bytes_every_time(clips_dir, models, variant):
    first = variant_frames(clips_dir, models, variant)[2]
    again = variant_frames(clips_dir, models, variant)[2]
    assert digest(first) == digest(again)
    assert digest(first) != digest(variant_frames(clips_dir, models, "plain")[2])


def test_small_makes_the_standing_person_a_sixth_of_the_frame(clips_dir, models):
    plan, source, frames = variant_frames(clips_dir, models, "small")
    assert plan.scale < 1.0
    before_fall = [f for f in frames if f.time_s < 2.0][::5]
    heights = []
    for frame in before_fall:
        people = [d.box for d in models.detector.detect(frame.image) if d.label == "Normal"]
        if people:
            heights.append(max(b.height for b in people) / frame.image.shape[0])
    assert len(heights) >= 3
    assert 0.12 <= float(np.median(heights)) <= 0.22  # about 1/6
    assert frames[0].image.shape == source[0].image.shape


def test_cut_starts_the_stream_just_before_the_fall(clips_dir, models):
    plan, source, frames = variant_frames(clips_dir, models, "cut")
    # the first frame at or after 0.4 s before the fall, on a clock that starts at the cut
    assert 0.0 <= frames[0].time_s < 1 / 15 and frames[0].index == 0
    first_source = next(f for f in source if f.time_s + 1e-6 >= 2.3 - CUT_LEAD_S)
    assert np.array_equal(frames[0].image, first_source.image)
    assert plan.label_start(2.3) == pytest.approx(CUT_LEAD_S)
    assert len(frames) == len([f for f in source if f.time_s + 1e-6 >= 2.3 - CUT_LEAD_S])


def test_drop_halves_the_frames_and_freezes_during_the_fall(clips_dir, models):
    plan, source, frames = variant_frames(clips_dir, models, "drop")
    assert len(frames) == (len(source) + 1) // 2
    frozen = [f for f in frames if plan.freeze_from_s <= f.time_s < plan.freeze_from_s + DROP_FREEZE_S]
    assert len(frozen) >= 2 and all(np.array_equal(f.image, frozen[0].image) for f in frozen)


def test_dim_darkens_the_real_clip(clips_dir, models):
    _, source, frames = variant_frames(clips_dir, models, "dim")
    assert len(frames) == len(source)
    assert frames[10].image.mean() < 0.35 * source[10].image.mean()


def test_occlude_covers_where_the_person_ends_up(clips_dir, models):
    plan, source, frames = variant_frames(clips_dir, models, "occlude")
    assert plan.occluder is not None, plan.note
    region = plan.occluder
    late = [f for f in frames if f.time_s >= plan.occlude_from_s]
    early = [f for f in frames if f.time_s < plan.occlude_from_s]
    y1, y2, x1, x2 = int(region.y1), int(region.y2), int(region.x1), int(region.x2)
    assert late and all(np.array_equal(f.image[y1:y2, x1:x2], plan.occluder_patch) for f in late)
    assert np.array_equal(early[0].image, source[0].image)
    # the person lying there is hidden: the last frame differs from the source where the patch is
    assert not np.array_equal(late[-1].image[y1:y2, x1:x2], source[-1].image[y1:y2, x1:x2])

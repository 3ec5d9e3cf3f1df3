"""Harder versions of a labelled clip, imitating what real cameras do (`fall-edge eval --variants`).

Each variant is made deterministically from the clip itself: a plan is computed from one pass
over the clip (the detector measures how tall the person stands and where they end up), then
every frame is transformed by pure functions. The same clip and models always give the same
frames, so results can be compared between versions of the fall logic.

    plain    the clip as it is
    dim      a dark room: gamma 2.2, exposure x0.35, sensor noise sigma 4
    small    the frame shrunk onto a canvas of the same size, so the standing person is ~1/6 of it
    cut      the stream starts 0.4 s before the labelled fall (a third of the way into a nofall clip)
    drop     every other frame dropped, and the picture frozen for 0.3 s during the fall
    occlude  once the person is down, the lower half of where they end up is covered by a static
             patch of background (a bed or a table in the way)
"""


import logging
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from edge.errors import FallEdgeError
from edge.types import Box, Detection, Frame

logger = logging.getLogger(__name__)

VARIANTS: Tuple[str, ...] = ("plain", "dim", "small", "cut", "drop", "occlude")

DIM_GAMMA = 2.2
DIM_EXPOSURE = 0.35
DIM_NOISE_SIGMA = 4.0
SMALL_TARGET_SHARE = 1.0 / 6.0  # standing person's height as a share of the frame
SMALL_MIN_SCALE = 0.15
CUT_LEAD_S = 0.4  # stream starts this long before the labelled fall
DROP_FREEZE_AFTER_START_S = 0.2  # the picture freezes this long after the fall starts ...
DROP_FREEZE_S = 0.3  # ... for this long
OCCLUDE_AFTER_START_S = 1.0  # the patch appears this long after the fall starts (the person is down)
NOFALL_EVENT_SHARE = 1.0 / 3.0  # on nofall clips, cut/freeze/occlude happen a third of the way in
_HEIGHT_PROBES = 5  # frames the standing height is measured on
_BACKGROUND_SAMPLES = 15  # frames the background patch is the median of


def parse_variants(text: str) -> List[str]:
    """'dim,small' -> ['dim', 'small']; 'all' -> every variant, plain first."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(VARIANTS)
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        raise FallEdgeError(f"unknown variant '{', '.join(unknown) or text}': choose from {', '.join(VARIANTS)} "
                            f"or all (e.g. --variants plain,dim,small)")
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class VariantPlan:
    """What a variant does to one clip, fixed before the first frame."""

    name: str
    event_s: float  # the labelled fall start, or a third of a nofall clip
    cut_start_s: float = 0.0  # cut: frames before this are dropped and the clock restarts here
    scale: float = 1.0  # small: the frame's scale on the canvas
    fill_bgr: Tuple[int, int, int] = (0, 0, 0)  # small: canvas colour
    freeze_from_s: Optional[float] = None  # drop: frozen from here for DROP_FREEZE_S
    occluder: Optional[Box] = None  # occlude: covered region, frame pixels
    occluder_patch: Optional[np.ndarray] = None  # ... and what covers it
    occlude_from_s: float = 0.0
    note: str = ""  # why a variant could not do its part on this clip

    def label_start(self, fall_start_s: Optional[float]) -> Optional[float]:
        """The fall start on the variant's clock (cut restarts the clock)."""
        if fall_start_s is None:
            return None
        return fall_start_s - self.cut_start_s


# -- pure frame transforms ------------------------------------------------------------------


_DIM_TABLE = np.round(np.power(np.arange(256) / 255.0, DIM_GAMMA) * DIM_EXPOSURE * 255.0).astype(np.int16)


def dim_image(image: np.ndarray, seed: int) -> np.ndarray:
    """A dark room: midtones crushed by gamma, exposure cut, then sensor noise (seeded: the same
    frame always gets the same noise)."""
    noise = np.empty(image.shape, np.int16)
    cv2.setRNGSeed(seed)
    cv2.randn(noise, 0.0, DIM_NOISE_SIGMA)
    return np.clip(_DIM_TABLE[image] + noise, 0, 255).astype(np.uint8)


def small_scale(person_height_share: Optional[float]) -> float:
    """Scale that brings a standing person of this share of the frame height to ~1/6."""
    if not person_height_share or person_height_share <= SMALL_TARGET_SHARE:
        return 1.0
    return max(SMALL_MIN_SCALE, SMALL_TARGET_SHARE / person_height_share)


def shrink_onto_canvas(image: np.ndarray, scale: float, fill_bgr: Tuple[int, int, int]) -> np.ndarray:
    """The frame scaled down and centred on a canvas of its own size."""
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA)
    canvas = np.empty_like(image)
    canvas[:] = fill_bgr
    top, left = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return canvas


def paste(image: np.ndarray, region: Box, patch: np.ndarray) -> np.ndarray:
    out = image.copy()
    x1, y1 = int(region.x1), int(region.y1)
    out[y1:y1 + patch.shape[0], x1:x1 + patch.shape[1]] = patch
    return out


def lower_half(box: Box, frame_w: int, frame_h: int) -> Optional[Box]:
    """The lower half of a box, clipped to the frame and on whole pixels; None when empty."""
    x1, x2 = max(0, int(box.x1)), min(frame_w, int(np.ceil(box.x2)))
    y1, y2 = max(0, int((box.y1 + box.y2) / 2)), min(frame_h, int(np.ceil(box.y2)))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return Box(float(x1), float(y1), float(x2), float(y2))


def border_colour(image: np.ndarray) -> Tuple[int, int, int]:
    edges = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return tuple(int(v) for v in edges.reshape(-1, 3).mean(axis=0))  # type: ignore[return-value]


# -- the plan -------------------------------------------------------------------------------


def event_time(fall_start_s: Optional[float], duration_s: float) -> float:
    return fall_start_s if fall_start_s is not None else duration_s * NOFALL_EVENT_SHARE


def _tallest_person(detections: Sequence[Detection], fall_class_id: int) -> Optional[Box]:
    upright = [d.box for d in detections if d.class_id != fall_class_id]
    return max(upright, key=lambda b: b.height) if upright else None


def _most_fallen_person(detections: Sequence[Detection], fall_class_id: int) -> Optional[Box]:
    if not detections:
        return None
    best = max(detections, key=lambda d: d.class_scores[fall_class_id] if d.class_scores else 0.0)
    return best.box


@dataclass
class ClipSketch:
    """What planning needs from one pass over a clip, without holding the clip in memory."""

    duration_s: float
    first: np.ndarray
    last: np.ndarray
    before_event: List[np.ndarray]  # frames up to the event, evenly spaced


def sketch_clip(frames: Iterator[Frame], fps: float, fall_start_s: Optional[float], frame_count: int) -> ClipSketch:
    duration = frame_count / fps if frame_count else 0.0
    at = event_time(fall_start_s, duration)
    step = max(1, int(at * fps) // _BACKGROUND_SAMPLES)
    first: Optional[np.ndarray] = None
    last: Optional[np.ndarray] = None
    before: List[np.ndarray] = []
    time_s = 0.0
    for frame in frames:
        first = frame.image if first is None else first
        last, time_s = frame.image, frame.time_s
        if frame.time_s <= at and frame.index % step == 0:
            before.append(frame.image)
    if first is None or last is None:
        raise FallEdgeError("the clip has no frames: check it with ffprobe")
    return ClipSketch(duration_s=max(duration, time_s), first=first, last=last, before_event=before or [first])


def plan_variant(name: str, sketch: Optional[ClipSketch], duration_s: float, fall_start_s: Optional[float],
                 detect: Callable[[np.ndarray], List[Detection]], fall_class_id: int) -> VariantPlan:
    """Fix what the variant does to this clip; `small` and `occlude` need the sketch and the
    detector's detect(image)."""
    at = event_time(fall_start_s, duration_s)
    if name in ("plain", "dim"):
        return VariantPlan(name, at)
    if name == "cut":
        return VariantPlan(name, at, cut_start_s=max(0.0, at - CUT_LEAD_S) if fall_start_s is not None else at)
    if name == "drop":
        return VariantPlan(name, at, freeze_from_s=at + (DROP_FREEZE_AFTER_START_S if fall_start_s is not None else 0))
    if sketch is None:
        raise ValueError(f"variant {name} needs a sketch of the clip")
    if name == "small":
        probes = sketch.before_event[:: max(1, len(sketch.before_event) // _HEIGHT_PROBES)][:_HEIGHT_PROBES]
        heights = [box.height / image.shape[0] for image in probes
                   for box in [_tallest_person(detect(image), fall_class_id)] if box is not None]
        share = float(np.median(heights)) if heights else None
        note = "" if share else "no standing person found: not shrunk"
        return VariantPlan(name, at, scale=small_scale(share), fill_bgr=border_colour(sketch.first), note=note)
    if name == "occlude":
        last = sketch.last
        final = _most_fallen_person(detect(last), fall_class_id)
        region = lower_half(final, last.shape[1], last.shape[0]) if final is not None else None
        if region is None:
            return VariantPlan(name, at, note="nobody found in the last frame: nothing covered")
        background = np.median(np.stack(sketch.before_event), axis=0).astype(np.uint8)
        patch = background[int(region.y1):int(region.y2), int(region.x1):int(region.x2)].copy()
        occlude_from = at + (OCCLUDE_AFTER_START_S if fall_start_s is not None else 0.0)
        return VariantPlan(name, at, occluder=region, occluder_patch=patch, occlude_from_s=occlude_from)
    raise FallEdgeError(f"unknown variant '{name}': choose from {', '.join(VARIANTS)}")


def needs_sketch(name: str) -> bool:
    return name in ("small", "occlude")


def select_frames(plan: VariantPlan, frames: Iterator[Frame]) -> Iterator[Frame]:
    """The frames the variant keeps, on its clock: cut restarts the stream, drop skips every other
    frame and freezes the picture for a moment."""
    frozen: Optional[np.ndarray] = None
    kept = 0
    for frame in frames:
        image, time_s, index = frame.image, frame.time_s, frame.index
        if plan.name == "cut":
            if time_s + 1e-6 < plan.cut_start_s:
                continue
            time_s -= plan.cut_start_s
            index = kept  # the stream starts here: numbered from 0
        elif plan.name == "drop":
            if index % 2:
                continue
            assert plan.freeze_from_s is not None
            if plan.freeze_from_s <= time_s < plan.freeze_from_s + DROP_FREEZE_S:
                frozen = image if frozen is None else frozen
                image = frozen
        kept += 1
        yield Frame(image=image, index=index, time_s=time_s)


def transform_frame(plan: VariantPlan, frame: Frame) -> Frame:
    """The picture as the variant shows it (applied only to frames the pipeline processes)."""
    image = frame.image
    if plan.name == "dim":
        image = dim_image(image, seed=frame.index)
    elif plan.name == "small":
        image = shrink_onto_canvas(image, plan.scale, plan.fill_bgr)
    elif plan.name == "occlude" and plan.occluder is not None and frame.time_s >= plan.occlude_from_s:
        assert plan.occluder_patch is not None
        image = paste(image, plan.occluder, plan.occluder_patch)
    return frame if image is frame.image else Frame(image=image, index=frame.index, time_s=frame.time_s)

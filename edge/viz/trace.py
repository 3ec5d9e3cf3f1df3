"""`--trace DIR`: one JSON line per processed frame and track, saying what the pipeline saw and why
each track's fall state did or did not change. Read it with `jq` or any JSON-lines reader:

    {"t": 3.1, "frame": 56, "track": 2, "observed": "pose+det", "box": [...], "keypoints": 14,
     "torso_angle_deg": 21.5, "height_ratio": 0.41, "descent": 0.9, "descent_speed": 2.3,
     "detector_fall": 0.71, "lying_score": 0.62, "state": "falling", "events": [],
     "why": "falling: lying 0.20 of 0.40 s"}

A frame with nobody in it gets one line with "track": null, so the trace shows every frame.
"""


import json
import logging
import os
from pathlib import Path
from typing import IO, Any, Dict, List, Optional

from edge.private import open_private, private_folder
from edge.types import FrameResult

logger = logging.getLogger(__name__)

MAX_TRACE_BYTES = 100 * 1024 * 1024  # then DIR/<name>.jsonl moves to <name>.jsonl.1 (one old copy kept)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def trace_lines(result: FrameResult, min_keypoint_score: float) -> List[Dict[str, Any]]:
    """The records of one processed frame; keypoints count those at min_keypoint_score or more
    (pose.min_keypoint_score, the same rule the fall logic uses)."""
    frame = result.frame
    base: Dict[str, Any] = {"t": round(frame.time_s, 3), "frame": frame.index,
                            "detector_ran": result.detector_ran}
    if not result.tracks:
        return [dict(base, track=None)]
    events_by_track: Dict[int, List[str]] = {}
    for event in result.events:
        events_by_track.setdefault(event.track_id, []).append(event.type)
    lines = []
    for track in result.tracks:
        fresh_pose = track.person is not None and track.person_time_s == frame.time_s
        seen = []
        if fresh_pose:
            seen.append("pose")
        if track.detector_time_s == frame.time_s:
            seen.append("det")
        if track.observed_this_frame and not seen:
            seen.append("box")
        record = dict(base, track=track.track_id, observed="+".join(seen) or "none", box=track.box.as_list(),
                      keypoints=int((track.person.keypoints[:, 2] >= min_keypoint_score).sum()) if fresh_pose else 0)
        record.update({key: _round(value) for key, value in track.fall.trace().items()})
        if fresh_pose:
            # The skeleton itself (x, y in frame pixels, score): what the sequence cue reads, so a
            # trace is also its training data (scripts/train_sequence.py).
            record["kp"] = [[round(float(x), 1), round(float(y), 1), round(float(s), 2)]
                            for x, y, s in track.person.keypoints]
        record["handovers"] = track.handovers
        record["events"] = events_by_track.get(track.track_id, [])
        lines.append(record)
    return lines


class TraceWriter:
    """A FrameResult sink writing the trace of one stream to DIR/<name>.jsonl. Owner-only (boxes
    describe people) and bounded: past max_bytes the file is rotated, keeping one old copy."""

    def __init__(self, folder: Path, name: str, min_keypoint_score: float,
                 max_bytes: int = MAX_TRACE_BYTES) -> None:
        private_folder(folder)
        self.path = folder / f"{name}.jsonl"
        self.max_bytes = max_bytes
        self.min_keypoint_score = min_keypoint_score
        self._written = 0
        self._handle: Optional[IO[str]] = self._open()

    def _open(self) -> IO[str]:
        self._written = 0
        return open_private(self.path, "w")

    def __call__(self, result: FrameResult) -> None:
        if self._handle is None:
            return
        for line in trace_lines(result, self.min_keypoint_score):
            text = json.dumps(line, separators=(",", ":")) + "\n"
            self._handle.write(text)
            self._written += len(text)
        if self._written >= self.max_bytes:
            self._handle.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._handle = self._open()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            logger.info("trace written to %s", self.path)

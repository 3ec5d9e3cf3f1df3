"""A disk cache of what the models said about a frame, for repeated evaluations on a small CPU.

Tuning the fall logic means re-running `fall-edge eval` over the same clips many times; the
models are 90% of the cost and give the same answer for the same pixels. The cache is keyed
by the frame's own bytes (blake2b), the operation (whole-frame pose, pose on a crop region,
detector) and a fingerprint of the model files and every setting that changes their output,
so a hit is exactly what the model would have returned. Values are float32 arrays (no
pickle), in one SQLite file per fingerprint.

Every entry is one autocommitted SQLite row: an eval killed half-way leaves only whole rows
(what it finished is used next time), and several evals may write at once (WAL). The folder
holds keypoints of the people in the clips, so it is owner-only and bounded: `trim_cache`
drops fingerprints not used for `max_age_days`, then the least recently used ones, then the
oldest rows of the newest, until the folder is under `max_bytes`.
"""


import hashlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edge.private import private_file, private_folder
from edge.types import NUM_KEYPOINTS, Box, Detection, Person

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the stored layout or the decoding behind it changes
_PERSON_COLUMNS = 5 + NUM_KEYPOINTS * 3  # box, score, keypoints
DEFAULT_MAX_BYTES = 3 * 1024 ** 3  # far above what the development folders need (README, "Measured here")
DEFAULT_MAX_AGE_DAYS = 30.0
_FILE_GLOB = "outputs-*.sqlite"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/fall-edge, or ~/.cache/fall-edge."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fall-edge"


def _files_of(database: Path) -> List[Path]:
    """The database and its WAL and shared-memory files."""
    return [p for p in (database, Path(f"{database}-wal"), Path(f"{database}-shm")) if p.exists()]


def cache_size_bytes(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for db in folder.glob(_FILE_GLOB) for p in _files_of(db))


def fingerprint(*parts: object) -> str:
    """A short stable name for a model file's hash plus the settings that shape its output."""
    text = "|".join(str(part) for part in (CACHE_FORMAT, *parts))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=10).hexdigest()


def pack_people(people: Sequence[Person]) -> bytes:
    rows = np.zeros((len(people), _PERSON_COLUMNS), np.float32)
    for row, person in zip(rows, people):
        b = person.box
        row[:5] = (b.x1, b.y1, b.x2, b.y2, person.score)
        row[5:] = person.keypoints.reshape(-1)
    return rows.tobytes()


def unpack_people(blob: bytes) -> List[Person]:
    rows = np.frombuffer(blob, np.float32).reshape(-1, _PERSON_COLUMNS)
    return [Person(box=Box(*map(float, row[:4])), score=float(row[4]),
                   keypoints=row[5:].reshape(NUM_KEYPOINTS, 3).copy()) for row in rows]


def pack_detections(detections: Sequence[Detection], class_count: int) -> bytes:
    rows = np.zeros((len(detections), 6 + class_count), np.float32)
    for row, detection in zip(rows, detections):
        b = detection.box
        row[:6] = (b.x1, b.y1, b.x2, b.y2, detection.score, detection.class_id)
        row[6:6 + len(detection.class_scores)] = detection.class_scores
    return rows.tobytes()


def unpack_detections(blob: bytes, class_names: Sequence[str]) -> List[Detection]:
    rows = np.frombuffer(blob, np.float32).reshape(-1, 6 + len(class_names))
    return [Detection(box=Box(*map(float, row[:4])), score=float(row[4]), class_id=int(row[5]),
                      label=class_names[int(row[5])], class_scores=tuple(float(v) for v in row[6:]))
            for row in rows]


class OutputCache:
    """Model outputs by (frame digest, operation); one SQLite file per model fingerprint."""

    def __init__(self, folder: Path, model_fingerprint: str) -> None:
        private_folder(folder)
        self.path = folder / f"outputs-{model_fingerprint}.sqlite"
        private_file(self.path)
        os.utime(self.path)  # "recently used", for trim_cache
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:  # e.g. a power cut mid-checkpoint: start this fingerprint afresh
            logger.warning("model cache %s unreadable (%s): starting it again", self.path.name, exc)
            for path in _files_of(self.path):
                path.unlink()
            self._db = self._open()
        self._last_image: Optional[np.ndarray] = None
        self._last_digest = b""
        self.hits = 0
        self.misses = 0

    def _open(self) -> sqlite3.Connection:
        # Autocommit: every entry is one whole row, so a killed eval leaves no half entry, and
        # several eval workers can write to one file (a transaction held open by one would lock
        # out the others). WAL with synchronous=NORMAL survives a killed process intact.
        db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS outputs (key BLOB PRIMARY KEY, value BLOB NOT NULL)")
        db.execute("SELECT COUNT(*) FROM (SELECT 1 FROM outputs LIMIT 1)").fetchone()
        return db

    def image_digest(self, image: np.ndarray) -> bytes:
        """The frame's digest, computed once per frame although several models ask for it."""
        if image is not self._last_image:
            digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16)
            digest.update(repr(image.shape).encode("ascii"))
            self._last_image, self._last_digest = image, digest.digest()
        return self._last_digest

    def key(self, image: np.ndarray, operation: str, region: Optional[Box] = None) -> bytes:
        where = "" if region is None else ",".join(f"{v:.2f}" for v in (region.x1, region.y1, region.x2, region.y2))
        return self.image_digest(image) + f"{operation}:{where}".encode("ascii")

    def get(self, key: bytes) -> Optional[bytes]:
        # Closing the cursor ends the read at once: a read left open would pin an old snapshot and
        # make this connection's next write fail once another worker has written.
        cursor = self._db.execute("SELECT value FROM outputs WHERE key = ?", (key,))
        row = cursor.fetchone()
        cursor.close()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return bytes(row[0])

    def put(self, key: bytes, value: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO outputs (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        self._db.close()

    def stats(self) -> Tuple[int, int]:
        return self.hits, self.misses


def trim_cache(folder: Path, max_bytes: int = DEFAULT_MAX_BYTES,
               max_age_days: float = DEFAULT_MAX_AGE_DAYS) -> int:
    """Bring the folder under max_bytes and max_age_days; returns the bytes it holds after.

    Whole fingerprints go first (oldest use first: an old model's or an old setting's outputs),
    then the oldest rows of what is left. Run it when no eval is writing to the folder."""
    if not folder.is_dir():
        return 0
    now = time.time()
    databases = sorted(folder.glob(_FILE_GLOB), key=lambda p: p.stat().st_mtime)
    for database in list(databases):
        if now - database.stat().st_mtime > max_age_days * 86400:
            logger.info("model cache: %s unused for over %.0f days, removed", database.name, max_age_days)
            for path in _files_of(database):
                path.unlink()
            databases.remove(database)
    while len(databases) > 1 and cache_size_bytes(folder) > max_bytes:
        oldest = databases.pop(0)
        logger.info("model cache over %d MB: %s (least recently used) removed", max_bytes // 2**20, oldest.name)
        for path in _files_of(oldest):
            path.unlink()
    size = cache_size_bytes(folder)
    if databases and size > max_bytes:
        _trim_rows(databases[0], size - int(max_bytes * 0.9))
        size = cache_size_bytes(folder)
    return size


def _trim_rows(database: Path, excess_bytes: int) -> None:
    """Delete the oldest rows (lowest rowid: first written) worth about excess_bytes, then give the
    space back to the file system."""
    db = sqlite3.connect(str(database), timeout=60.0, isolation_level=None)
    try:
        rows, stored = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(value) + LENGTH(key)), 0) FROM outputs").fetchone()
        if not rows:
            return
        drop = min(rows, max(1, int(rows * excess_bytes / max(1, stored)) + 1))
        db.execute("DELETE FROM outputs WHERE rowid IN (SELECT rowid FROM outputs ORDER BY rowid LIMIT ?)", (drop,))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("VACUUM")
        logger.info("model cache: %d oldest of %d entries removed from %s to stay under its size", drop, rows,
                    database.name)
    finally:
        db.close()

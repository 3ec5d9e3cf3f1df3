"""An append-only journal beside the outbox: each event is written and fsynced here, by a
thread of its own, before the outbox (SQLite) stores it.

Why: the outbox's SQLite file can be locked for a long time (another process in a write
transaction, a stalled SD card holding a lock), and the event then waits in memory. A
daemon killed meanwhile (power cut, OOM, the watchdog) lost a fall that had already been
printed and sounded (issue 40, defect 1). The journal shares no lock with SQLite: a plain
file opened for appending.

One file per process (`<outbox>.journal-<pid>-<start>.jsonl`, owner-only): a process
empties its own when everything in it is in the outbox and removes it at a clean stop; the
outbox imports the files of processes that died (`import_journals`), skipping what it holds
already, so an event is stored once. An event delivered and removed from the outbox just
before the kill can be sent again: the control room drops it by its event_id.
"""


import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

logger = logging.getLogger(__name__)

MAX_JOURNAL_BYTES = 64 * 1024 * 1024  # beyond it new events wait in memory only (logged, in health)


def journal_glob(outbox_path: Path) -> str:
    return f"{outbox_path.name}.journal-*.jsonl"


def new_journal_path(outbox_path: Path) -> Path:
    return outbox_path.with_name(f"{outbox_path.name}.journal-{os.getpid()}-{int(time.time() * 1000)}.jsonl")


def encode_line(topic: str, payload: Dict[str, object]) -> bytes:
    return (json.dumps({"topic": topic, "payload": payload}, separators=(",", ":")) + "\n").encode("utf-8")


def read_journal(path: Path) -> Tuple[List[Tuple[str, str]], int]:
    """(topic, payload as the outbox stores it) per readable line, and how many lines were not
    (a line cut short by the kill)."""
    rows: List[Tuple[str, str]] = []
    damaged = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                item = json.loads(line)
                payload = item["payload"]
                if not isinstance(payload, dict):
                    raise TypeError("not an event")
                rows.append((str(item["topic"]), json.dumps(payload, separators=(",", ":"))))
            except (ValueError, KeyError, TypeError, RecursionError):
                damaged += 1
    return rows, damaged


def orphan_journals(outbox_path: Path, own: Optional[Path]) -> Iterator[Path]:
    """The journals beside the outbox left by other (dead) processes, oldest first."""
    found = sorted(outbox_path.parent.glob(journal_glob(outbox_path)), key=lambda p: p.stat().st_mtime)
    return (path for path in found if own is None or path.name != own.name)


class Journal:
    """Appends events to this process's journal file, one fsync per batch."""

    def __init__(self, path: Path, max_bytes: int = MAX_JOURNAL_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.problem: Optional[str] = None  # why events are not journaled now (health)
        self.appended = 0  # journal numbers given so far (1, 2, ...)
        self._size = 0
        self._fd: Optional[int] = None
        self._lock = threading.Lock()
        self._logged: set = set()

    def append(self, items: Sequence[Tuple[str, Dict[str, object]]]) -> Optional[int]:
        """Write and fsync the items; returns the journal number of the last, or None when they
        could not be written (they go on to the outbox all the same)."""
        data = b"".join(encode_line(topic, payload) for topic, payload in items)
        with self._lock:
            if self._size + len(data) > self.max_bytes:
                self._fail("full", f"journal {self.path.name} holds {self._size} bytes not yet in the outbox "
                                   f"(limit {self.max_bytes}): new events wait in memory only until the outbox "
                                   "can be written")
                return None
            try:
                if self._fd is None:
                    self._fd = os.open(str(self.path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.write(self._fd, data)
                os.fsync(self._fd)
            except OSError as exc:
                self._fail("write", f"journal {self.path.name} cannot be written ({exc.strerror or exc}): events "
                                    "wait in memory only until the outbox can be written")
                return None
            self._size += len(data)
            self.appended += len(items)
            if self.problem is not None:
                logger.warning("outbox journal %s writable again", self.path.name)
                self.problem = None
                self._logged.clear()
            return self.appended

    def clear_through(self, number: int) -> bool:
        """Empty the file when everything journaled (up to `number`) is in the outbox. Never
        waits: a journal busy writing is emptied next time."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if number != self.appended or self._size == 0 or self._fd is None:
                return False
            try:
                os.ftruncate(self._fd, 0)
                os.fsync(self._fd)
            except OSError:
                return False  # emptied next time; the outbox skips what it holds already
            self._size = 0
            return True
        finally:
            self._lock.release()

    def close(self, everything_stored: bool) -> None:
        """Remove the file when the outbox holds all of it; else leave it for the next start."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if everything_stored or self._size == 0:
                try:
                    self.path.unlink()
                except OSError:
                    pass  # never made (the folder is broken), or read-only now: the next start imports it

    def _fail(self, key: str, message: str) -> None:
        self.problem = message
        if key not in self._logged:
            self._logged.add(key)
            logger.error("%s", message)

"""Store-and-forward: every event is written here (SQLite, WAL) before it is published, and
removed only when the broker has acknowledged it (PUBACK).

The row id is the event's `seq`: monotonic per device, never reused (AUTOINCREMENT), and
it survives restarts. When the outbox is full the oldest rows are dropped and counted.

The outbox never stops the daemon: when its file cannot be opened or written (a full disk,
a folder that cannot be made, a path that is a folder, a corrupt file) events wait in a
bounded memory queue, the reason is logged once and shown in health (`error`), and the file
is tried again every few seconds. Those events are still handed to the publisher meanwhile
(rows with a negative seq: in memory only), so a broker that is up gets them at once. At exit,
events still only in memory are appended to `<name>.unsent.jsonl` beside the file (owner-only)
and stored from there on the next start; where even that cannot be written, the log says how
many were lost. A corrupt file is moved aside (`<name>.corrupt-<time>`) and a new one started
with whatever rows could still be read from the old one.
"""


import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Deque, Dict, List, Optional, Set, Tuple

from edge.logs import LogThrottle
from edge.mqtt.journal import orphan_journals, read_journal
from edge.private import private_file

logger = logging.getLogger(__name__)

_MEMORY_FALLBACK = 1000
RETRY_S = 5.0  # how often an unusable outbox file is tried again
DROP_LOG_INTERVAL_S = 60.0  # dropped events are counted in one line at most this often


@dataclass
class OutboxRow:
    seq: int  # the event's seq; negative: kept in memory only (the file cannot be written now)
    topic: str
    payload: Dict[str, object]  # with "seq" filled in (not for rows in memory: they have none yet)

    @property
    def in_memory(self) -> bool:
        return self.seq < 0

    def encoded(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":")).encode("utf-8")


def describe_storage_error(exc: BaseException) -> str:
    """SQLite's and the OS's words for why the file cannot be used, as an installer would say them."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "disk is full" in text:
        return "disk full"
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
        return "cannot open the file (is the path a folder, or not writable?)"
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in text:
        return "read-only file or file system"
    if isinstance(exc, IsADirectoryError):
        return "the path is a folder"
    if isinstance(exc, OSError):
        return f"{exc.strerror or text}: {exc.filename}" if exc.filename else (exc.strerror or text)
    return text


class _DropCounter:
    """The first drop is logged at once, later ones as one count at most every interval_s: a
    full outbox must not write one line per event."""

    def __init__(self, what: str, interval_s: float = DROP_LOG_INTERVAL_S) -> None:
        self.what = what
        self.total = 0
        self._unlogged = 0
        self._throttle = LogThrottle(interval_s)

    def add(self, count: int) -> None:
        self.total += count
        self._unlogged += count
        if self._throttle.allow():
            logger.warning("%s: dropped the %d oldest event(s) (%d in all)", self.what, self._unlogged, self.total)
            self._unlogged = 0


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                   "topic TEXT NOT NULL, payload TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute("SELECT COUNT(*) FROM outbox").fetchone()
    except sqlite3.Error:
        db.close()
        raise
    return db


# Salvage gives up after this many sequence numbers in a row that cannot be read (damage that
# deep is the whole table, and each try is a lookup).
_SALVAGE_MAX_SKIPS = 20000
_SALVAGE_MAX_S = 10.0  # and it takes at most this long: the daemon is starting meanwhile


def _salvage(path: Path) -> List[Tuple[int, str, str]]:
    """The rows still readable from a corrupt outbox, in seq order (often none). Row by row, each
    found from the table's index: a damaged page loses the rows on it, not every row behind it (a
    plain scan stopped at the first bad page and kept 44 of 300 rows that could be read)."""
    rows: List[Tuple[int, str, str]] = []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows
    try:
        try:
            highest = db.execute("SELECT max(seq) FROM outbox").fetchone()[0]
        except sqlite3.Error:
            highest = None
        # A damaged tree can send a lookup round in circles or hand back a seq it already gave:
        # the whole salvage has a deadline (SQLite's progress handler interrupts a lookup past
        # it), and a seq that does not move forward counts as a failed step.
        deadline = time.monotonic() + _SALVAGE_MAX_S
        db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10000)
        last, failures = 0, 0
        while failures < _SALVAGE_MAX_SKIPS and (not isinstance(highest, int) or last < highest):
            try:
                row = db.execute("SELECT seq, CAST(topic AS BLOB), CAST(payload AS BLOB) FROM outbox WHERE seq > ? "
                                 "ORDER BY seq LIMIT 1", (last,)).fetchone()
            except sqlite3.Error:
                if time.monotonic() > deadline:
                    break
                last, failures = last + 1, failures + 1  # the next row sits on a damaged page: step past it
                continue
            if row is None:
                break
            if not isinstance(row[0], int) or row[0] <= last:
                last, failures = last + 1, failures + 1
                continue
            failures = 0
            last = row[0]
            try:
                rows.append((last, row[1].decode("utf-8"), row[2].decode("utf-8")))
            except (AttributeError, UnicodeDecodeError):
                continue  # a damaged row (NULL, bytes that are not text): not an event any more
    except sqlite3.Error:
        pass  # the file cannot be read at all: keep what was read
    finally:
        db.close()
    return rows


def _check_intact(db: sqlite3.Connection) -> None:
    """Raise DatabaseError when the file's pages are damaged. Opening a damaged file succeeds, and
    the damage showed only when a read reached it: the outbox then kept every new event in memory
    for good instead of salvaging the file (found by the hostile-peer harness)."""
    try:
        verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.DatabaseError:
        db.close()
        raise
    if verdict != "ok":
        db.close()
        raise sqlite3.DatabaseError(f"damaged: {verdict}")


def _sidecars(path: Path) -> List[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


class Outbox:
    def __init__(self, path: Path, max_events: int = 10000) -> None:
        self.path = path
        self.max_events = max_events
        self._lock = threading.Lock()
        # Events the file could not take: (memory id, topic, payload), ids rising from 1.
        self._pending_memory: Deque[Tuple[int, str, Dict[str, object]]] = deque()
        self._memory_ids = 0
        self._db: Optional[sqlite3.Connection] = None
        self.error: Optional[str] = None  # why events are waiting in memory, for health
        self._reported: Set[str] = set()  # the reasons logged since the file last worked: each once
        self.lost_at_exit = 0  # events neither the outbox nor the file beside it could take at close()
        self._next_open = 0.0
        self.own_journal: Optional[Path] = None  # this process's journal (edge/mqtt/journal.py): not imported
        self._full = _DropCounter(f"outbox {path} full ({max_events} events)")
        self._memory_full = _DropCounter(f"outbox {path} unusable and {_MEMORY_FALLBACK} events in memory")
        with self._lock:
            self._ensure_open()

    @property
    def unsent_path(self) -> Path:
        """Where events still in memory at exit are written (and read back from on the next start)."""
        return self.path.with_name(self.path.name + ".unsent.jsonl")

    def close(self) -> None:
        """Store what memory still holds (in the file if it is back, else beside it), then close.
        Never says an event is stored when it is not: what cannot be written is logged as lost."""
        with self._lock:
            if self._pending_memory and self._ensure_open(retry_now=True):
                self._flush_memory()
            if self._pending_memory:
                self._write_unsent()
            if self._db is not None:
                self._db.close()
                self._db = None

    def _write_unsent(self) -> None:
        count = len(self._pending_memory)
        try:
            with os.fdopen(os.open(str(self.unsent_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a",
                           encoding="utf-8") as handle:
                for _, topic, payload in self._pending_memory:
                    handle.write(json.dumps({"topic": topic, "payload": payload}, separators=(",", ":")) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            logger.error("outbox %s: %d event(s) held in memory are LOST: neither the outbox nor %s can be "
                         "written (%s)", self.path, count, self.unsent_path.name, describe_storage_error(exc))
            self.lost_at_exit = count
            return
        logger.warning("outbox %s unusable at exit (%s): %d event(s) held in memory written to %s; they are "
                       "stored and sent on the next start", self.path, self.error, count, self.unsent_path)
        self._pending_memory.clear()

    def _import_unsent(self, db: sqlite3.Connection) -> None:
        """Events written beside the outbox at an earlier exit go in first, in their order."""
        path = self.unsent_path
        if not path.is_file():
            return
        rows, damaged = [], 0
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    item = json.loads(line)
                    rows.append((str(item["topic"]), json.dumps(item["payload"], separators=(",", ":"))))
                except (ValueError, KeyError, TypeError, RecursionError):
                    damaged += 1  # a line cut short by a crash mid-write
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO outbox (topic, payload) VALUES (?, ?)", rows)
        db.execute("COMMIT")
        path.unlink()
        logger.warning("outbox %s: %d event(s) from %s stored%s", self.path, len(rows), path.name,
                       f" ({damaged} unreadable line(s) skipped)" if damaged else "")

    def _import_journals(self, db: sqlite3.Connection) -> None:
        """Events journaled by a process that died before the outbox stored them go in next, in
        their order; what the outbox holds already (stored before the kill) is skipped."""
        for path in orphan_journals(self.path, self.own_journal):
            rows, damaged = read_journal(path)
            db.execute("BEGIN IMMEDIATE")
            added = 0
            for topic, payload in rows:
                if db.execute("SELECT 1 FROM outbox WHERE topic = ? AND payload = ? LIMIT 1",
                              (topic, payload)).fetchone() is None:
                    db.execute("INSERT INTO outbox (topic, payload) VALUES (?, ?)", (topic, payload))
                    added += 1
            db.execute("COMMIT")
            path.unlink()
            if added or damaged:
                logger.warning("outbox %s: %d event(s) from the journal of a process that stopped (%s) stored%s",
                               self.path, added, path.name,
                               f" ({damaged} unreadable line(s) skipped)" if damaged else "")

    # -- opening -------------------------------------------------------------------------

    def _ensure_open(self, retry_now: bool = False) -> bool:
        """The database, opened now if it was not and the retry time has come."""
        if self._db is not None:
            return True
        now = time.monotonic()
        if now < self._next_open and not retry_now:
            return False
        try:
            self._db = self._open()
        except (sqlite3.Error, OSError) as exc:
            self._next_open = now + RETRY_S
            self._fail(describe_storage_error(exc))
            return False
        if self.error is not None:
            logger.warning("outbox %s usable again (was: %s)", self.path, self.error)
            self.error = None
            self._reported.clear()
        self._flush_memory()
        return True

    def _fail(self, reason: str) -> None:
        # A file that fails two ways in turn (a foreign table: writes and reads each have their
        # own error) logged both on every event and every read: 229 lines in 26 s.
        self.error = reason
        if reason not in self._reported:
            self._reported.add(reason)
            logger.error("outbox %s cannot be used (%s): events wait in memory (up to %d) and it is tried again "
                         "every %.0f s; detection and the local alarm go on. Fix the disk or mqtt.outbox_path",
                         self.path, reason, _MEMORY_FALLBACK, RETRY_S)

    def _open(self) -> sqlite3.Connection:
        # Owner-only whatever the umask: the events hold people's boxes and keypoints.
        # (an existing parent, such as /var/lib/fall-edge, keeps its mode: it may be shared)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_file(self.path)
        try:
            db = _connect(self.path)
            _check_intact(db)
        except sqlite3.OperationalError:
            raise  # disk full, no permission: the file itself may be fine
        except sqlite3.DatabaseError as exc:  # "file is not a database", "malformed"
            db = self._replace_corrupt(exc)
        try:
            self._import_unsent(db)
            self._import_journals(db)
        except (sqlite3.Error, OSError):
            db.close()
            raise
        return db

    def _replace_corrupt(self, exc: sqlite3.DatabaseError) -> sqlite3.Connection:
        rows = _salvage(self.path)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        moved = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        os.replace(self.path, moved)
        for sidecar in _sidecars(self.path):
            if sidecar.exists():
                os.replace(sidecar, moved.with_name(moved.name + sidecar.name[len(self.path.name):]))
        private_file(self.path)
        db = _connect(self.path)
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO outbox (seq, topic, payload) VALUES (?, ?, ?)", rows)
        db.execute("COMMIT")
        logger.error("outbox %s was corrupt (%s): moved to %s and started afresh; %d event(s) recovered from it",
                     self.path, exc, moved.name, len(rows))
        return db

    def _lost(self, exc: sqlite3.Error) -> None:
        """A write or read failed mid-run: keep going from memory; a corrupt file is replaced on
        the next try, a full disk is simply tried again."""
        if not isinstance(exc, sqlite3.OperationalError) and self._db is not None:
            self._db.close()
            self._db = None
            self._next_open = 0.0
        self._fail(describe_storage_error(exc))

    # -- writing -------------------------------------------------------------------------

    def put(self, topic: str, payload: Dict[str, object]) -> Optional[int]:
        """Store one event; returns its seq, or None when it could only be kept in memory."""
        with self._lock:
            if self._ensure_open():
                self._flush_memory()
            if self._db is None or self._pending_memory:
                self._remember(topic, payload)
                return None
            try:
                return self._insert(topic, payload)
            except sqlite3.Error as exc:
                self._lost(exc)
                self._remember(topic, payload)
                return None

    def _remember(self, topic: str, payload: Dict[str, object]) -> None:
        if len(self._pending_memory) >= _MEMORY_FALLBACK:
            self._pending_memory.popleft()
            self._memory_full.add(1)
        self._memory_ids += 1
        self._pending_memory.append((self._memory_ids, topic, payload))

    def _insert(self, topic: str, payload: Dict[str, object]) -> int:
        assert self._db is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            cursor = self._db.execute("INSERT INTO outbox (topic, payload) VALUES (?, ?)",
                                      (topic, json.dumps(payload, separators=(",", ":"))))
            seq = int(cursor.lastrowid)
            excess = self._count() - self.max_events
            if excess > 0:
                self._db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                                 (excess,))
                # Two statements rather than an upsert: JetPack 4's SQLite (3.22) has no ON CONFLICT.
                self._db.execute("INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0)")
                self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (excess,))
            self._db.execute("COMMIT")
        except sqlite3.Error:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back (a full disk does): report the first error, not this one
            raise
        if excess > 0:
            self._full.add(excess)
        return seq

    def _flush_memory(self) -> None:
        had_memory = bool(self._pending_memory)
        while self._pending_memory and self._db is not None:
            _, topic, payload = self._pending_memory[0]
            try:
                self._insert(topic, payload)
            except sqlite3.Error as exc:
                self._lost(exc)
                return
            self._pending_memory.popleft()
        if had_memory and not self._pending_memory:
            logger.warning("outbox %s writable again: the events kept in memory are stored", self.path)
            self.error = None
            self._reported.clear()

    # -- reading -------------------------------------------------------------------------

    def pending(self, after_seq: int = 0, limit: int = 100, after_memory: int = 0) -> List[OutboxRow]:
        """Stored rows after seq after_seq, then rows held in memory after memory id after_memory
        (seq -id: the file could not take them; they are sent all the same)."""
        rows: List[Tuple[int, bytes, bytes]] = []
        with self._lock:
            if self._ensure_open():
                self._flush_memory()
            if self._db is not None:
                try:
                    # As bytes, decoded below row by row: SQLite's own decoding failed the whole
                    # read on one damaged byte, and named the row's text in the error (found by the
                    # hostile-peer harness: one flipped byte stopped all delivery for good).
                    rows = self._db.execute("SELECT seq, CAST(topic AS BLOB), CAST(payload AS BLOB) FROM outbox "
                                            "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
                except sqlite3.Error as exc:
                    self._lost(exc)
            memory = [(-memory_id, topic, dict(payload)) for memory_id, topic, payload in self._pending_memory
                      if memory_id > after_memory][:max(0, limit - len(rows))]
        out = []
        for seq, topic_bytes, payload in rows:
            try:
                topic = topic_bytes.decode("utf-8")
                data = json.loads(payload)  # strict UTF-8: a damaged byte is a ValueError
            except (ValueError, RecursionError, TypeError, AttributeError):  # also a NULL in a damaged row
                self._skip_unreadable(seq)
                continue
            if not isinstance(data, dict):
                self._skip_unreadable(seq)
                continue
            data["seq"] = seq
            out.append(OutboxRow(seq=seq, topic=topic, payload=data))
        return out + [OutboxRow(seq=seq, topic=topic, payload=data) for seq, topic, data in memory]

    def _skip_unreadable(self, seq: int) -> None:
        """A row that is not a JSON object (a damaged page, another program's write) cannot be
        sent: it is moved out of the way, so the rows behind it still go."""
        logger.error("outbox %s: row %d is not an event (unreadable JSON); removed so later events still go",
                     self.path, seq)
        self.remove(seq)

    def remove(self, seq: int) -> None:
        with self._lock:
            if seq < 0:  # delivered from memory: nothing to store any more
                self._pending_memory = deque(item for item in self._pending_memory if item[0] != -seq)
                return
            if self._db is None:
                return  # sent twice after the file is back: the control room de-duplicates by event_id
            try:
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
            except sqlite3.Error as exc:
                self._lost(exc)

    def memory_depth(self) -> int:
        """Events held in memory only (the file cannot take them now)."""
        with self._lock:
            return len(self._pending_memory)

    def _count(self) -> int:
        assert self._db is not None
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def depth(self) -> int:
        with self._lock:
            stored = 0
            if self._db is not None:
                try:
                    stored = self._count()
                except sqlite3.Error as exc:
                    self._lost(exc)
            return stored + len(self._pending_memory)

    def dropped(self) -> int:
        with self._lock:
            stored = 0
            if self._db is not None:
                try:
                    row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
                    stored = int(row[0]) if row else 0
                except sqlite3.Error as exc:
                    self._lost(exc)
            return stored + self._memory_full.total

"""Store-and-forward: every event is written here (SQLite, WAL) before it is published, and
removed only when the broker has acknowledged it (PUBACK).

The row id is the event's `seq`: monotonic per device, never reused (AUTOINCREMENT), and
it survives restarts. When the outbox is full the oldest rows are dropped and counted; when
the disk is full, events wait in a bounded memory queue and are written once it can.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Deque, Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

_MEMORY_FALLBACK = 1000


@dataclass
class OutboxRow:
    seq: int
    topic: str
    payload: Dict[str, object]  # with "seq" filled in

    def encoded(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":")).encode("utf-8")


class Outbox:
    def __init__(self, path: Path, max_events: int = 10000) -> None:
        self.path = path
        self.max_events = max_events
        self._lock = threading.Lock()
        self._pending_memory: Deque[Tuple[str, Dict[str, object]]] = deque(maxlen=_MEMORY_FALLBACK)
        self._disk_full_logged = False
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        self._db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "topic TEXT NOT NULL, payload TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing -------------------------------------------------------------------------

    def put(self, topic: str, payload: Dict[str, object]) -> Optional[int]:
        """Store one event; returns its seq, or None when it could only be kept in memory."""
        with self._lock:
            self._flush_memory()
            if self._pending_memory:
                self._pending_memory.append((topic, payload))
                return None
            try:
                return self._insert(topic, payload)
            except sqlite3.OperationalError as exc:
                self._pending_memory.append((topic, payload))
                if not self._disk_full_logged:
                    logger.error("outbox %s cannot be written (%s): keeping events in memory (up to %d) until "
                                 "it can; free disk space", self.path, exc, _MEMORY_FALLBACK)
                    self._disk_full_logged = True
                return None

    def _insert(self, topic: str, payload: Dict[str, object]) -> int:
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
                logger.warning("outbox full (%d events): dropped the %d oldest", self.max_events, excess)
            self._db.execute("COMMIT")
            return seq
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            raise

    def _flush_memory(self) -> None:
        while self._pending_memory:
            topic, payload = self._pending_memory[0]
            try:
                self._insert(topic, payload)
            except sqlite3.OperationalError:
                return
            self._pending_memory.popleft()
            if not self._pending_memory and self._disk_full_logged:
                logger.warning("outbox %s writable again: events from memory stored", self.path)
                self._disk_full_logged = False

    # -- reading -------------------------------------------------------------------------

    def pending(self, after_seq: int = 0, limit: int = 100) -> List[OutboxRow]:
        with self._lock:
            self._flush_memory()
            rows = self._db.execute("SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after_seq, limit)).fetchall()
        out = []
        for seq, topic, payload in rows:
            data = json.loads(payload)
            data["seq"] = seq
            out.append(OutboxRow(seq=seq, topic=topic, payload=data))
        return out

    def remove(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def depth(self) -> int:
        with self._lock:
            return self._count() + len(self._pending_memory)

    def dropped(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return int(row[0]) if row else 0

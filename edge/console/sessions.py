"""The logins the console knows of, on the server: a session cookie is only good while its id is
here. Logging out deletes it, so a copied cookie stops working then (a signed cookie alone stayed
valid until it expired), and a login lasts console.session_hours whatever the cookie says. Kept
in the console's SQLite file, so logins survive a restart of the console."""


import secrets
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Optional

from edge.private import private_file


class Sessions:
    def __init__(self, path: Path, lifetime_s: float) -> None:
        self.path, self.lifetime_s = path, lifetime_s
        path.parent.mkdir(parents=True, exist_ok=True)
        private_file(path)
        with closing(self._connect()) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS console_sessions (sid TEXT PRIMARY KEY, operator TEXT NOT NULL, "
                       "expires REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(str(self.path), timeout=5.0)

    def begin(self, operator: str) -> str:
        """A new session id for operator (and the expired ones forgotten)."""
        sid = secrets.token_urlsafe(32)
        now = time.time()
        with closing(self._connect()) as db, db:
            db.execute("DELETE FROM console_sessions WHERE expires < ?", (now,))
            db.execute("INSERT INTO console_sessions (sid, operator, expires) VALUES (?, ?, ?)",
                       (sid, operator, now + self.lifetime_s))
        return sid

    def operator(self, sid: Optional[str]) -> Optional[str]:
        """Whose session sid is, while it lasts; None for an unknown, ended or expired one."""
        if not isinstance(sid, str) or not sid:
            return None
        with closing(self._connect()) as db:
            row = db.execute("SELECT operator FROM console_sessions WHERE sid = ? AND expires >= ?",
                             (sid, time.time())).fetchone()
        return row[0] if row else None

    def end(self, sid: Optional[str]) -> None:
        if isinstance(sid, str) and sid:
            with closing(self._connect()) as db, db:
                db.execute("DELETE FROM console_sessions WHERE sid = ?", (sid,))

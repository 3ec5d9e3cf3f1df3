"""The login form's lockout: _MAX_FAILURES wrong passwords for one name from one address within
_LOCKOUT_S lock that name there for _LOCKOUT_S.

Each attempt takes its place under the lock before its password is hashed, and is counted as
a failure until it proves right: guesses sent all at once used to read the count before the
(slow, scrypt) check and write it after, so 40 of them were all answered 401, none 429, and the
right password was then let in (issue 40, defect 2)."""


import threading
import time
from typing import Dict, Optional, Tuple

MAX_FAILURES = 5
LOCKOUT_S = 300.0
_MAX_TRACKED = 10000  # (name, address) pairs remembered; random names must not grow it without bound

Key = Tuple[str, str]


class LoginThrottle:
    def __init__(self, max_failures: int = MAX_FAILURES, lockout_s: float = LOCKOUT_S) -> None:
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._lock = threading.Lock()
        self._failures: Dict[Key, Tuple[int, float]] = {}  # key -> (attempts not proven right, since)

    def begin(self, key: Key, now: Optional[float] = None) -> bool:
        """Take an attempt for key: False when it is locked (answer 429 without hashing)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            count, since = self._failures.get(key, (0, now))
            if now - since >= self.lockout_s:
                count, since = 0, now  # each lock starts a fresh window when it ends
            if count >= self.max_failures:
                return False
            if key not in self._failures and len(self._failures) >= _MAX_TRACKED:
                self._forget_old(now)
            self._failures[key] = (count + 1, since)
            return True

    def succeeded(self, key: Key) -> None:
        """The password was right: the attempts for key are forgotten."""
        with self._lock:
            self._failures.pop(key, None)

    def _forget_old(self, now: float) -> None:
        for old in [k for k, (_, started) in self._failures.items() if now - started >= self.lockout_s]:
            del self._failures[old]
        if len(self._failures) >= _MAX_TRACKED:
            self._failures.clear()

"""Signed commands from the control room: an HMAC-SHA256 over the command's topic, a timestamp,
a nonce and its fields, with the site's shared key (`mqtt.command_key_file`).

A device with a key rejects every command that is unsigned, signed with another key, for
another device or command (the topic is signed), older or newer than
`mqtt.command_max_age_s`, or a replay of one already seen. The key never travels: only the
signature does, next to the fields in clear.
"""


import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

from edge.errors import ConfigError

MIN_KEY_BYTES = 16
_MAX_PAYLOAD = 1000
_MAX_NONCES = 10000  # commands remembered within the time window (signed ones only)
_SIGNED_FIELDS = ("event_id", "operator")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")  # HMAC-SHA256 as hex
_NONCE = re.compile(r"[\x21-\x7e]{1,64}")  # printable ASCII, no spaces
_MAX_FIELD_CHARS = 200
_MAX_TS = 1e11  # seconds since 1970: year 5138; anything larger is not a clock


def _encodable(text: str) -> bool:
    """Text that UTF-8 can carry (a lone surrogate from JSON's \\ud800 cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_command_key(path: str) -> bytes:
    """The shared key from its file (trailing newline ignored); a short key is a config error."""
    key_path = Path(path).expanduser()
    try:
        key = key_path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"mqtt.command_key_file {key_path} cannot be read ({exc.strerror}): check the path "
                          f"and its permissions") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"mqtt.command_key_file {key_path} holds {len(key)} bytes: use at least {MIN_KEY_BYTES} "
                          f"(e.g. openssl rand -hex 32 > {key_path})")
    return key


def _message(topic: str, ts: float, nonce: str, fields: Dict[str, str]) -> bytes:
    parts = [topic, repr(float(ts)), nonce] + [fields.get(name, "") for name in _SIGNED_FIELDS]
    return "\n".join(parts).encode("utf-8")


def sign_command(key: bytes, topic: str, event_id: str = "", operator: str = "",
                 now: Optional[float] = None) -> bytes:
    """The JSON payload of a signed command for `topic` (fall/<device>/cmd/<command>)."""
    ts = time.time() if now is None else now
    nonce = secrets.token_hex(12)
    fields = {"event_id": event_id, "operator": operator}
    signature = hmac.new(key, _message(topic, ts, nonce, fields), hashlib.sha256).hexdigest()
    payload = {"ts": ts, "nonce": nonce, "sig": signature, **{k: v for k, v in fields.items() if v}}
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


class CommandVerifier:
    def __init__(self, key: bytes, max_age_s: float) -> None:
        self.key = key
        self.max_age_s = max_age_s
        self._seen: Dict[str, float] = {}  # nonce -> when it stops mattering
        # The newest ts among nonces forgotten: a command no newer than it is refused. Forgetting by
        # time alone let a replay in again after the clock went back (issue 40, defect 11).
        self._forgotten_ts = float("-inf")
        self._lock = threading.Lock()

    def check(self, topic: str, payload: bytes, now: Optional[float] = None) -> Tuple[bool, str]:
        """(True, "") for a good command, else (False, why)."""
        now = time.time() if now is None else now
        if len(payload) > _MAX_PAYLOAD:
            return False, "payload too long"
        try:
            data = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return False, "not a signed command (JSON with ts, nonce and sig expected)"
        if not isinstance(data, dict):
            return False, "not a signed command (JSON with ts, nonce and sig expected)"
        ts, nonce, signature = data.get("ts"), data.get("nonce"), data.get("sig")
        # Every field is checked for type, size and range before anything computes with it: one
        # odd value (a 400-digit ts, NaN, a non-ASCII sig, a surrogate) must be a refusal, never
        # an exception in the network thread.
        # (abs() before float(): float() of a 400-digit int overflows; NaN fails every comparison)
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not abs(ts) <= _MAX_TS:
            return False, "unsigned or malformed signature fields (ts must be seconds since 1970)"
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            return False, "unsigned or malformed signature fields (nonce: 1-64 printable ASCII characters)"
        if not isinstance(signature, str) or not _SIGNATURE.fullmatch(signature):
            return False, "unsigned or malformed signature fields (sig: 64 hex digits)"
        fields = {name: data.get(name, "") for name in _SIGNED_FIELDS}
        if not all(isinstance(value, str) and len(value) <= _MAX_FIELD_CHARS and _encodable(value)
                   for value in fields.values()):
            return False, f"malformed fields (event_id, operator: text up to {_MAX_FIELD_CHARS} characters)"
        if abs(now - ts) > self.max_age_s:
            return False, (f"timestamp {now - ts:+.0f} s away (allowed {self.max_age_s:.0f} s): a replay or a "
                           "wrong clock")
        expected = hmac.new(self.key, _message(topic, ts, nonce, fields), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return False, "bad signature (another key, device or command)"
        with self._lock:
            for old_nonce, until in list(self._seen.items()):
                if until <= now:
                    self._forgotten_ts = max(self._forgotten_ts, until - self.max_age_s)
                    del self._seen[old_nonce]
            if nonce in self._seen:
                return False, "replayed (nonce already used)"
            if ts <= self._forgotten_ts:
                return False, "replayed or out of order (no newer than a command already forgotten)"
            if len(self._seen) >= _MAX_NONCES:
                return False, "too many commands in the time window"
            self._seen[nonce] = ts + self.max_age_s
        return True, ""

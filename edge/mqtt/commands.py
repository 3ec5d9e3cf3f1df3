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
        if (isinstance(ts, bool) or not isinstance(ts, (int, float)) or not isinstance(nonce, str)
                or not isinstance(signature, str) or not nonce or len(nonce) > 64):
            return False, "unsigned or malformed signature fields"
        fields = {name: data.get(name, "") for name in _SIGNED_FIELDS}
        if not all(isinstance(value, str) for value in fields.values()):
            return False, "malformed fields"
        expected = hmac.new(self.key, _message(topic, ts, nonce, fields), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return False, "bad signature (another key, device or command)"
        if abs(now - ts) > self.max_age_s:
            return False, (f"timestamp {now - ts:+.0f} s away (allowed {self.max_age_s:.0f} s): a replay or a "
                           "wrong clock")
        with self._lock:
            self._seen = {n: until for n, until in self._seen.items() if until > now}
            if nonce in self._seen:
                return False, "replayed (nonce already used)"
            if len(self._seen) >= _MAX_NONCES:
                return False, "too many commands in the time window"
            self._seen[nonce] = ts + self.max_age_s
        return True, ""

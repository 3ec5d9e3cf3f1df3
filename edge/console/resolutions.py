"""An alarm resolved in the console: the device that raised it went away (powered off, its
network gone) and can never acknowledge it, so "waiting for the device" never ended and the page
kept beeping. An operator closes it here with a reason; it goes into the event log as a
`resolved` event naming the alarm, the operator and why, so the dashboard and the history show
who closed it and why. The acknowledgement is still sent to the device, so one that is back stops
its local alarm; what the device says later (acknowledged, recovered) is kept in the history."""


import json
import sqlite3
import uuid
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict

MAX_REASON_CHARS = 200


def clean_reason(text: object) -> str:
    """The operator's reason, printable and bounded; empty when none was given."""
    reason = "".join(ch for ch in str(text or "") if ch.isprintable()).strip()
    return reason[:MAX_REASON_CHARS]


def record_resolution(path: Path, device: str, camera: str, track_id: object, event_id: str, operator: str,
                      reason: str) -> Dict[str, object]:
    """Store the resolution as an event of the log (the monitor's table, another connection)."""
    now = datetime.now(timezone.utc)
    event: Dict[str, object] = {
        "event_id": str(uuid.uuid4()), "type": "resolved", "resolves": event_id, "operator": operator,
        "reason": reason, "device": device, "camera": camera, "track_id": track_id,
        "ts": now.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    with closing(sqlite3.connect(str(path), timeout=5.0)) as db, db:
        db.execute("INSERT INTO events (event_id, device, camera, type, seq, ts, payload, received_at) "
                   "VALUES (?, ?, ?, ?, NULL, ?, ?, ?)", (event["event_id"], device, camera, "resolved", event["ts"],
                                                           json.dumps(event), now.timestamp()))
    return event

"""The console's read side of the event log that edge/mqtt/monitor.py writes (SQLite, WAL: the
monitor's thread writes while page requests read on their own connections)."""


import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from edge.mqtt.schema import MAX_NESTING, health_problem, nesting_depth
from edge.types import AcknowledgedChains, EventType

OPENING = (EventType.FALL_DETECTED.value, EventType.ALARM.value)
CLOSING = (EventType.RECOVERED.value, EventType.ACKNOWLEDGED.value)
RESOLVED = "resolved"  # an alarm closed in the console (its device away): the console writes these
PAGE_SIZE = 25
RECENT_EVENTS = 5000  # the dashboard's alarms come from this many newest events


@dataclass
class Alarm:
    """A fall or alarm event with what became of it."""

    event: dict
    device: str
    camera: str
    received_at: float
    has_snapshot: bool
    closed_by: Optional[dict] = None  # the recovered or acknowledged event that closed it
    clip: Optional[dict] = None  # its clip's fields (codec, kept_on_device, reason), when one came
    escalation: Optional[dict] = None  # the same fall's `alarm` (still down after the hold), folded in
    escalation_has_snapshot: bool = False

    @property
    def still_down(self) -> bool:
        """The latest state of the fall: still down after the hold (an `alarm`)."""
        return self.escalation is not None or self.event.get("type") == EventType.ALARM.value

    @property
    def picture_id(self) -> Optional[str]:
        """The event whose snapshot the card shows: the fall's, else its escalation's."""
        if self.has_snapshot:
            return self.event_id
        if self.escalation is not None and self.escalation_has_snapshot:
            return str(self.escalation.get("event_id"))
        return None

    @property
    def clip_playable(self) -> bool:
        return self.clip is not None and not self.clip.get("kept_on_device")

    @property
    def event_id(self) -> str:
        return str(self.event["event_id"])

    @property
    def is_open(self) -> bool:
        return self.closed_by is None

    @property
    def down_since(self) -> Optional[float]:
        """Epoch seconds of the fall (started_at, else its own time), for "down for"."""
        for key in ("started_at", "ts"):
            moment = parse_time(self.event.get(key))
            if moment is not None:
                return moment
        return None


@dataclass
class Device:
    name: str
    status: str  # online, offline, or online (problems: ...)
    since: float
    cameras: List[Tuple[str, str, str]] = field(default_factory=list)  # (camera, status, reason)
    health: Dict[str, object] = field(default_factory=dict)
    health_at: Optional[float] = None

    @property
    def online(self) -> bool:
        return self.status.startswith("online")


def parse_time(text: object) -> Optional[float]:
    """An event's ISO 8601 UTC time ("2026-11-22T13:48:02.295Z") as epoch seconds."""
    if not isinstance(text, str):
        return None
    for layout in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):  # with and without milliseconds
        try:
            return datetime.strptime(text.replace("Z", "+0000"), layout).timestamp()
        except ValueError:
            continue
    return None


def stored_json(payload: str, check=None) -> Optional[dict]:
    """A stored payload as a dict, or None when it cannot be shown (the monitor checks what it
    stores; this also keeps rows from before those checks, or a damaged file, off the pages)."""
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError, TypeError):
        return None
    if not isinstance(value, dict) or nesting_depth(value) > MAX_NESTING or (check is not None and check(value)):
        return None
    return value


def shown_time(epoch: Optional[float]) -> str:
    """A moment for the page: UTC in the markup (and the data), which the page's localtime.js shows
    in the operator's own time zone; the UTC text stays where scripts do not run."""
    from markupsafe import Markup  # Flask's (the console's extra)

    if epoch is None:
        return "-"
    moment = datetime.fromtimestamp(epoch, timezone.utc)
    return Markup(f'<time datetime="{moment.strftime("%Y-%m-%dT%H:%M:%SZ")}">'
                  f'{moment.strftime("%Y-%m-%d %H:%M:%S UTC")}</time>')


class EventLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5.0)
        connection.row_factory = sqlite3.Row
        return connection

    def devices(self) -> List[Device]:
        with closing(self._connect()) as db:
            devices = {row["device"]: Device(row["device"], row["status"], row["since"])
                       for row in db.execute("SELECT device, status, since FROM devices ORDER BY device")}
            for row in db.execute("SELECT device, camera, status, reason FROM cameras ORDER BY camera"):
                device = devices.setdefault(row["device"], Device(row["device"], "unknown", 0.0))
                device.cameras.append((row["camera"], row["status"], row["reason"]))
            for row in db.execute("SELECT device, payload, CAST(received_at AS REAL) AS received_at FROM health"):
                device = devices.setdefault(row["device"], Device(row["device"], "unknown", 0.0))
                device.health = stored_json(row["payload"], health_problem) or {}
                device.health_at = row["received_at"]
                # Cameras read as plain files (no camera status topic) show in health while frames flow.
                known = {camera for camera, _, _ in device.cameras}
                reported = device.health.get("cameras")
                for camera in sorted(reported) if isinstance(reported, dict) else []:
                    if camera not in known:
                        device.cameras.append((str(camera), "online" if device.online else "unknown", ""))
        return sorted(devices.values(), key=lambda d: (not d.online, d.name))

    def alarms(self, limit: int = 50) -> List[Alarm]:
        """Falls and alarms, open ones first, each newest first; a closed one names what closed it."""
        with closing(self._connect()) as db:
            # The newest events only: the log grows for months, the dashboard is read every update.
            rows = db.execute("SELECT * FROM (SELECT e.rowid AS row, e.device, e.camera, e.type, e.payload, "
                              # a time stored as text (an older or foreign writer) reads as 0
                              "CAST(e.received_at AS REAL) AS received_at, s.event_id AS picture, c.meta AS clip "
                              "FROM events e LEFT JOIN snapshots s ON s.event_id = e.event_id "
                              "LEFT JOIN clips c ON c.clip_of = e.event_id "
                              "ORDER BY e.received_at DESC, e.rowid DESC LIMIT ?) "
                              "ORDER BY received_at, row", (RECENT_EVENTS,)).fetchall()
        alarms: List[Alarm] = []
        open_chains: Dict[Tuple[str, str, int], List[Alarm]] = {}
        # A chain's newest fall card: its `alarm` (still down after the hold) joins that card, open
        # or acknowledged, instead of being a second card with its own Acknowledge (issue 41).
        last_fall: Dict[Tuple[str, str, int], Alarm] = {}
        acknowledged = AcknowledgedChains()  # chain -> the acknowledged event that closed it
        by_id: Dict[str, Alarm] = {}
        for row in rows:
            event = stored_json(row["payload"])
            if event is None:
                continue
            track = event.get("track_id")
            chain = (row["device"], row["camera"], track if isinstance(track, int) else -1)
            repeat = acknowledged.repeat_of(row["type"], chain)
            fall = last_fall.get(chain)
            if (row["type"] == EventType.ALARM.value and fall is not None and fall.escalation is None
                    and (fall.is_open or repeat is not None)):
                fall.escalation, fall.escalation_has_snapshot = event, row["picture"] is not None
                by_id[str(event.get("event_id"))] = fall
                continue
            if row["type"] in OPENING:
                alarm = Alarm(event, row["device"], row["camera"], row["received_at"], row["picture"] is not None,
                              clip=stored_json(row["clip"]) if row["clip"] else None)
                alarms.append(alarm)
                by_id[alarm.event_id] = alarm
                if row["type"] == EventType.FALL_DETECTED.value:
                    last_fall[chain] = alarm
                if repeat is not None:  # the same fall still down after the hold: not a new alarm
                    alarm.closed_by = repeat  # type: ignore[assignment]
                    continue
                open_chains.setdefault(chain, []).append(alarm)
            elif row["type"] == RESOLVED:
                # Closed in the console (edge/console/resolutions.py): the alarm it names, if it is open.
                target = by_id.get(str(event.get("resolves")))
                if target is not None and target.device == row["device"] and target.closed_by is None:
                    target.closed_by = event
                    for chain_alarms in open_chains.values():
                        if target in chain_alarms:
                            chain_alarms.remove(target)
            elif row["type"] in CLOSING:
                closed = open_chains.pop(chain, [])
                if row["type"] == EventType.RECOVERED.value:
                    last_fall.pop(chain, None)  # up again: a later alarm on this track is a new fall's
                if row["type"] == EventType.ACKNOWLEDGED:
                    acknowledged.acknowledged(chain, event)
                target = by_id.get(str(event.get("acknowledges")))
                # Only the device that raised an alarm can close it: another device naming its
                # event id (a fake or a misconfigured one) closes nothing.
                if target is not None and target.device == row["device"] and target not in closed:
                    closed.append(target)
                for alarm in closed:
                    if alarm.closed_by is None:
                        alarm.closed_by = event
        alarms.sort(key=lambda a: (not a.is_open, -a.received_at))
        return alarms[:limit]

    def history(self, device: str = "", camera: str = "", kind: str = "", since: Optional[float] = None,
                until: Optional[float] = None, page: int = 1) -> Tuple[List[dict], int]:
        """One page of events, newest first, and how many match the filters."""
        where, params = [], []  # type: Tuple[List[str], List[object]]
        for column, value in (("device", device), ("camera", camera), ("type", kind)):
            if value:
                where.append(f"e.{column} = ?")
                params.append(value)
        if since is not None:
            where.append("e.received_at >= ?")
            params.append(since)
        if until is not None:
            where.append("e.received_at < ?")
            params.append(until)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with closing(self._connect()) as db:
            total = db.execute(f"SELECT COUNT(*) FROM events e{clause}", params).fetchone()[0]
            # Each row with whether its snapshot and a playable clip are kept, for the links; the
            # history still pages without them when those tables cannot be read.
            order = f"{clause} ORDER BY e.received_at DESC, e.rowid DESC LIMIT ? OFFSET ?"
            values = [*params, PAGE_SIZE, (max(1, page) - 1) * PAGE_SIZE]
            try:
                rows = db.execute("SELECT e.payload, CAST(e.received_at AS REAL) AS received_at, "
                                  "s.event_id IS NOT NULL AS picture, c.video IS NOT NULL AS clip FROM events e "
                                  "LEFT JOIN snapshots s ON s.event_id = e.event_id "
                                  "LEFT JOIN clips c ON c.clip_of = e.event_id" + order, values).fetchall()
            except sqlite3.OperationalError:
                rows = db.execute("SELECT e.payload, CAST(e.received_at AS REAL) AS received_at, 0 AS picture, "
                                  "0 AS clip FROM events e" + order, values).fetchall()
        out = []
        for row in rows:
            event = stored_json(row["payload"])
            if event is not None:
                out.append(dict(event, received_at=row["received_at"], has_snapshot=bool(row["picture"]),
                                has_clip=bool(row["clip"])))
        return out, total

    def count(self) -> int:
        """Events in the log."""
        with closing(self._connect()) as db:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def clip(self, event_id: str) -> Optional[Tuple[bytes, str]]:
        """The video of an event's clip and its codec, when the device sent it."""
        with closing(self._connect()) as db:
            row = db.execute("SELECT video, meta FROM clips WHERE clip_of = ? AND video IS NOT NULL",
                             (event_id,)).fetchone()
        meta = stored_json(row["meta"]) if row else None
        return (bytes(row["video"]), str(meta.get("codec"))) if row and meta else None

    def snapshot(self, event_id: str) -> Optional[bytes]:
        with closing(self._connect()) as db:
            row = db.execute("SELECT jpeg FROM snapshots WHERE event_id = ?", (event_id,)).fetchone()
        return bytes(row["jpeg"]) if row else None

    def names(self) -> Tuple[List[str], List[str]]:
        """Devices and cameras in the log, for the history's filters."""
        with closing(self._connect()) as db:
            devices = [row[0] for row in db.execute("SELECT DISTINCT device FROM events ORDER BY device")]
            cameras = [row[0] for row in db.execute("SELECT DISTINCT camera FROM events ORDER BY camera")]
        return devices, cameras

"""Incidents in Postgres: the state machine of `core.incident_model`, applied in the caller's
transaction, with its effects carried out (notifications queued for the notifier, receipts
and incident updates written to the outbox, the timeline appended).

Used by the escalation worker (open, join, cancel), the escalation timer (ticks) and the
officer actions of the API and the officer app.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import msgspec
import structlog

from core.errors import NotFound
from core.incident_model import (
    DEFAULT_POLICIES,
    LEVELS,
    Action,
    DeviceReceipt,
    Effect,
    IncidentState,
    NobodyOnDuty,
    NotifyLevel,
    NotifyOfficer,
    Policy,
    Resolve,
    TellNotified,
    TimelineEntry,
    apply,
    open_incident,
)
from schemas import topics as mqtt_topics
from schemas.messages import IncidentUpdate, Receipt, ReceiptStatus
from schemas.topics import KafkaTopics

log = structlog.get_logger(__name__)

# Notification kinds that page an officer to act; the others only inform.
PAGING_KINDS: Final = ("incident_opened", "escalated", "reminder", "assigned", "major_incident")

_SELECT = """
SELECT incident_id, case_number, category, status, priority, level, level_index, device_id,
       grid_code, event_type, first_event_id, pressed_at, received_at, opened_at,
       first_notified_at, acknowledged_at, acknowledged_by, ack_level, on_scene_at, on_scene_by,
       closed_at, closed_by, outcome, referral, assigned_to, awaiting, deadline_at, remind_at,
       due_at, policy, version, is_major, major_id, correlation_key, event_count
  FROM incidents
 WHERE incident_id = $1
"""

_SAVE = """
UPDATE incidents
   SET status = $2, level = $3, level_index = $4, awaiting = $5, deadline_at = $6, remind_at = $7,
       due_at = $8, acknowledged_at = $9, acknowledged_by = $10, ack_level = $11,
       on_scene_at = $12, on_scene_by = $13, closed_at = $14, closed_by = $15, outcome = $16,
       referral = $17, assigned_to = $18, version = $19, updated_at = clock_timestamp()
 WHERE incident_id = $1
"""

_INCIDENT_COLUMNS = """case_number, category, status, priority, level, level_index, device_id,
                       grid_code, event_type, first_event_id, pressed_at, received_at, opened_at,
                       policy, awaiting, deadline_at, remind_at, due_at, is_major, correlation_key"""

# Case numbers: the district's code, the day (UTC) and a city-wide sequence, at least six digits
# and as many more as it has (the sequence never restarts: a city passes its millionth incident,
# and a number cut to six digits would be the number of an incident before it, which the unique
# case number refuses). to_char's 9 is a digit kept only when significant, its 0 one always kept.
_CASE_NUMBER = """substr({grid}, 1, 6) || '-' || to_char({opened} AT TIME ZONE 'UTC', 'YYYYMMDD') || '-'
          || to_char(nextval('case_number_seq'), 'FM9999999999999000000')"""


def case_number_of(grid_code: str, opened_at: datetime, n: int) -> str:
    """The case number `_CASE_NUMBER` makes of sequence value `n`."""
    return f"{grid_code[:6]}-{opened_at.astimezone(UTC):%Y%m%d}-{n:06d}"


# Only the conflict of a race (another transaction opened the device's incident, or the
# building's major incident, first) is skipped; any other, as of a case number, is an error.
_INSERT = f"""
INSERT INTO incidents ({_INCIDENT_COLUMNS})
VALUES ({_CASE_NUMBER.format(grid="$7", opened="$12")},
        $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
ON CONFLICT {{arbiter}} DO NOTHING
RETURNING incident_id
"""
_INSERT_OF_DEVICE = _INSERT.format(arbiter="(device_id, category) WHERE closed_at IS NULL")
_INSERT_MAJOR = _INSERT.format(arbiter="(correlation_key) WHERE is_major AND closed_at IS NULL")

# Officers on shift at the unit of `level_index` on the grid cell's path (0 = the grid cell).
_RESPONDERS = """
SELECT o.officer_id
  FROM units g
  JOIN officers o ON o.unit_code = g.path[array_length(g.path, 1) - $2]
 WHERE g.code = $1 AND o.active AND o.role <> 'admin'
   AND EXISTS (SELECT 1 FROM duty_shifts s WHERE s.officer_id = o.officer_id AND s.during @> $3::timestamptz)
 ORDER BY o.officer_id
"""

_POLICY = """
SELECT p.unit_code, p.levels, p.cancel_grace_s
  FROM units g
 CROSS JOIN LATERAL unnest(g.path) WITH ORDINALITY AS a(code, depth)
  JOIN escalation_policies p ON p.unit_code = a.code AND p.priority = $2
 WHERE g.code = $1
 ORDER BY a.depth DESC
 LIMIT 1
"""

QUEUE = """
INSERT INTO notifications (incident_id, officer_id, kind, level, reason, dedupe_key, incident_version)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (dedupe_key) DO NOTHING
"""

TIMELINE = """
INSERT INTO incident_timeline (incident_id, at, kind, actor, event_row_id, detail)
VALUES ($1, $2, $3, $4, $5, $6)
"""

OUTBOX = "INSERT INTO outbox (destination, topic, key, payload) VALUES ($1, $2, $3, $4)"

_RECEIPT_STATUS: Final = {
    "incident_opened": ReceiptStatus.INCIDENT_OPENED,
    "acknowledged": ReceiptStatus.ACKNOWLEDGED,
    "on_scene": ReceiptStatus.ON_SCENE,
    "resolved": ReceiptStatus.RESOLVED,
    "cancelled": ReceiptStatus.CANCELLED,
    "cancel_refused": ReceiptStatus.CANCEL_REFUSED,
}


def policy_from_row(priority: int, row: Any) -> Policy:
    """The policy found by `_POLICY` (columns unit_code, levels, cancel_grace_s), or the default
    of the priority when no unit on the path has one."""
    if row is None:
        return DEFAULT_POLICIES[priority]
    data = {
        "priority": priority,
        "levels": row["levels"],
        "cancel_grace_s": row["cancel_grace_s"],
        "source": row["unit_code"],
    }
    return Policy.from_json(data)


def receipt_outbox_row(
    device_id: str, event_id: str, incident_id: Any, case_number: str, status: str, detail: str | None, now: datetime
) -> tuple[str, str, None, bytes]:
    """The outbox row of a receipt to a device about its incident."""
    receipt = Receipt(
        status=_RECEIPT_STATUS[status],
        device_id=device_id,
        at=now,
        event_id=event_id,
        incident_id=str(incident_id),
        case_number=case_number,
        detail=detail,
    )
    return ("mqtt", mqtt_topics.device_receipts(device_id), None, msgspec.json.encode(receipt))


def update_outbox_row(
    topics: KafkaTopics, row: Any, state: IncidentState, change: str, now: datetime
) -> tuple[str, str, str, bytes]:
    """The outbox row of an incident update for the live queue (`row`: the incident's
    incident_id, case_number, priority, device_id, grid_code, first_event_id, event_type)."""
    update = IncidentUpdate(
        incident_id=str(row["incident_id"]),
        case_number=row["case_number"],
        change=change,
        status=state.status,
        priority=row["priority"],
        level=state.level,
        device_id=row["device_id"] or "",
        grid_code=row["grid_code"],
        at=now,
        event_id=row["first_event_id"],
        event_type=row["event_type"],
        version=state.version,
    )
    return ("kafka", topics.incident_updates, str(row["incident_id"]), msgspec.json.encode(update))


def state_from_row(row: asyncpg.Record) -> IncidentState:
    return IncidentState(
        status=row["status"],
        # Incidents from before policies were frozen on them follow the default of their priority.
        policy=Policy.from_json(row["policy"]) if row["policy"] else DEFAULT_POLICIES[row["priority"]],
        pressed_at=row["received_at"],  # the platform's clock: the grace period runs from it
        opened_at=row["opened_at"],
        level_index=row["level_index"],
        awaiting=row["awaiting"],
        deadline_at=row["deadline_at"],
        remind_at=row["remind_at"],
        acknowledged_at=row["acknowledged_at"],
        acknowledged_by=row["acknowledged_by"],
        ack_level=row["ack_level"],
        on_scene_at=row["on_scene_at"],
        on_scene_by=row["on_scene_by"],
        closed_at=row["closed_at"],
        closed_by=row["closed_by"],
        outcome=row["outcome"],
        referral=row["referral"],
        assigned_to=row["assigned_to"],
        version=row["version"],
    )


@dataclass(frozen=True, slots=True)
class Opened:
    incident_id: Any
    case_number: str
    state: IncidentState


class IncidentService:
    def __init__(self, kafka_topics: KafkaTopics) -> None:
        self.topics = kafka_topics

    # ------------------------------------------------------------ reading

    async def load(self, conn: asyncpg.Connection[Any], incident_id: Any, *, lock: bool) -> asyncpg.Record:
        row = await conn.fetchrow(_SELECT + (" FOR UPDATE" if lock else ""), incident_id)
        if row is None:
            raise NotFound(f"no incident {incident_id}")
        return row

    async def policy_for(self, conn: asyncpg.Connection[Any], grid_code: str, priority: int) -> Policy:
        """The policy of the nearest unit on the grid cell's path that has one, else the default."""
        return policy_from_row(priority, await conn.fetchrow(_POLICY, grid_code, priority))

    async def responders(
        self, conn: asyncpg.Connection[Any], grid_code: str, level_index: int, now: datetime
    ) -> list[str]:
        return [r["officer_id"] for r in await conn.fetch(_RESPONDERS, grid_code, level_index, now)]

    # ------------------------------------------------------------ writing

    async def open(
        self,
        conn: asyncpg.Connection[Any],
        *,
        category: str,
        priority: int,
        device_id: str | None,
        grid_code: str,
        event_type: str,
        event_id: str,
        pressed_at: datetime,
        received_at: datetime,
        now: datetime,
        actor: str,
        reason: str,
        event_row_id: int | None = None,
        start_level: int = 0,
        is_major: bool = False,
        correlation_key: str | None = None,
        quiet: bool = False,
    ) -> Opened | None:
        """Open an incident; None when the device (or the building/grid of a major incident)
        already has an open one. `quiet` pages nobody (a member of a major incident: the
        major incident pages). The grace period of a cancel runs from `received_at`."""
        policy = await self.policy_for(conn, grid_code, priority)
        state = open_incident(policy, pressed_at=received_at, now=now, level_index=start_level)
        incident_id = await conn.fetchval(
            _INSERT_MAJOR if is_major else _INSERT_OF_DEVICE,
            category,
            state.status,
            priority,
            state.level,
            state.level_index,
            device_id,
            grid_code,
            event_type,
            event_id,
            pressed_at,
            received_at,
            now,
            policy.to_json(),
            state.awaiting,
            state.deadline_at,
            state.remind_at,
            state.due_at,
            is_major,
            correlation_key,
        )
        if incident_id is None:
            return None
        row = await self.load(conn, incident_id, lock=False)
        effects: list[Effect] = [
            TimelineEntry(
                "opened",
                actor,
                {
                    "event_id": event_id,
                    "type": event_type,
                    "priority": priority,
                    "level": state.level,
                    "policy": policy.source,
                },
            ),
            NotifyLevel(state.level_index, "major_incident" if is_major else "incident_opened", reason),
            DeviceReceipt("incident_opened"),
        ]
        if quiet:
            effects = [e for e in effects if not isinstance(e, NotifyLevel)]
        state = await self.carry_out(conn, row, state, effects, now, change="opened", event_row_id=event_row_id)
        return Opened(incident_id, row["case_number"], state)

    async def perform(
        self,
        conn: asyncpg.Connection[Any],
        incident_id: Any,
        action: Action,
        now: datetime,
        *,
        change: str,
        event_row_id: int | None = None,
    ) -> tuple[asyncpg.Record, IncidentState]:
        """Apply one action to one incident (locked for the transaction). Raises NotFound or
        IllegalAction; returns the row as it was and the new state."""
        row = await self.load(conn, incident_id, lock=True)
        state = state_from_row(row)
        new, effects = apply(state, action, now)
        if new is state:
            return row, state
        await self.save(conn, incident_id, new)
        new = await self.carry_out(conn, row, new, effects, now, change=change, event_row_id=event_row_id)
        if row["is_major"] and not new.is_open:
            await self._close_members(conn, incident_id, new, now)
        return row, new

    async def _close_members(
        self, conn: asyncpg.Connection[Any], major_id: Any, major: IncidentState, now: datetime
    ) -> None:
        """Closing a major incident closes its open members the same way (their devices have
        already had the major's receipt)."""
        members = await conn.fetch(
            "SELECT incident_id FROM incidents WHERE major_id = $1 AND closed_at IS NULL ORDER BY opened_at",
            major_id,
        )
        outcome = major.outcome if major.outcome in ("resolved", "false_alarm", "referred") else "resolved"
        for m in members:
            row = await self.load(conn, m["incident_id"], lock=True)
            state = state_from_row(row)
            new, effects = apply(
                state,
                Resolve(major.closed_by or "system", outcome, major.referral if outcome == "referred" else None),
                now,
            )
            await self.save(conn, m["incident_id"], new)
            effects = [e for e in effects if isinstance(e, TimelineEntry)]
            await self.carry_out(conn, row, new, effects, now, change="closed_with_major")

    async def save(self, conn: asyncpg.Connection[Any], incident_id: Any, s: IncidentState) -> None:
        await conn.execute(
            _SAVE,
            incident_id,
            s.status,
            s.level,
            s.level_index,
            s.awaiting,
            s.deadline_at,
            s.remind_at,
            s.due_at,
            s.acknowledged_at,
            s.acknowledged_by,
            s.ack_level,
            s.on_scene_at,
            s.on_scene_by,
            s.closed_at,
            s.closed_by,
            s.outcome,
            s.referral,
            s.assigned_to,
            s.version,
        )

    async def carry_out(
        self,
        conn: asyncpg.Connection[Any],
        row: asyncpg.Record,
        state: IncidentState,
        effects: list[Effect],
        now: datetime,
        *,
        change: str,
        event_row_id: int | None = None,
    ) -> IncidentState:
        incident_id = row["incident_id"]
        pending = list(effects)
        while pending:
            effect = pending.pop(0)
            match effect:
                case TimelineEntry(kind=kind, actor=actor, detail=detail):
                    await conn.execute(
                        TIMELINE,
                        incident_id,
                        now,
                        kind,
                        actor,
                        event_row_id if kind == "opened" else None,
                        detail,
                    )
                case NotifyLevel(level_index=li, kind=kind, reason=reason):
                    officers = await self.responders(conn, row["grid_code"], li, now)
                    if officers:
                        await self._queue(conn, incident_id, officers, kind, LEVELS[li], reason, state.version, now)
                        continue
                    await conn.execute(
                        TIMELINE,
                        incident_id,
                        now,
                        "nobody_on_duty",
                        "system:dispatch",
                        None,
                        {"level": LEVELS[li]},
                    )
                    if li >= state.policy.top:
                        log.error(
                            "nobody on duty at the top level; the timer pages again at the deadline",
                            incident_id=str(incident_id),
                            level=LEVELS[li],
                        )
                        continue
                    new, more = apply(state, NobodyOnDuty(li), now)
                    if new is not state:
                        await self.save(conn, incident_id, new)
                        state = new
                        pending.extend(more)
                case NotifyOfficer(officer_id=officer_id, kind=kind, reason=reason):
                    level = await conn.fetchval(
                        "SELECT u.level FROM officers o JOIN units u ON u.code = o.unit_code WHERE o.officer_id = $1",
                        officer_id,
                    )
                    await self._queue(
                        conn, incident_id, [officer_id], kind, level or "grid", reason, state.version, now
                    )
                case TellNotified(kind=kind, reason=reason, below_level=below, exclude=exclude):
                    rows = await conn.fetch(
                        "SELECT DISTINCT officer_id, level FROM notifications "
                        "WHERE incident_id = $1 AND kind = ANY($2::text[])",
                        incident_id,
                        list(PAGING_KINDS),
                    )
                    officers = sorted(
                        {
                            r["officer_id"]
                            for r in rows
                            if r["officer_id"] != exclude and (below is None or LEVELS.index(r["level"]) < below)
                        }
                    )
                    if officers:
                        await self._queue(conn, incident_id, officers, kind, state.level, reason, state.version, now)
                case DeviceReceipt(status=status, detail=detail):
                    await self._receipts(conn, row, status, detail, now)
        await self._announce(conn, row, state, change, now)
        await conn.execute("SELECT pg_notify('pingan_notifications', ''), pg_notify('pingan_outbox', '')")
        return state

    async def _queue(
        self,
        conn: asyncpg.Connection[Any],
        incident_id: Any,
        officers: list[str],
        kind: str,
        level: str,
        reason: str,
        version: int,
        now: datetime,
    ) -> None:
        await conn.executemany(
            QUEUE,
            [(incident_id, o, kind, level, reason, f"{incident_id}:v{version}:{kind}:{o}", version) for o in officers],
        )
        await conn.execute(
            TIMELINE,
            incident_id,
            now,
            "notifications_queued",
            "system:dispatch",
            None,
            {"officers": officers, "kind": kind, "level": level, "reason": reason},
        )

    async def _receipts(
        self,
        conn: asyncpg.Connection[Any],
        row: asyncpg.Record,
        status: str,
        detail: str | None,
        now: datetime,
    ) -> None:
        if row["is_major"]:
            devices = [
                (r["device_id"], r["first_event_id"])
                for r in await conn.fetch(
                    "SELECT device_id, first_event_id FROM incidents WHERE major_id = $1 AND closed_at IS NULL",
                    row["incident_id"],
                )
            ]
        else:
            devices = [(row["device_id"], row["first_event_id"])]
        records = []
        for device_id, event_id in devices:
            if not device_id:
                continue
            records.append(
                receipt_outbox_row(device_id, event_id, row["incident_id"], row["case_number"], status, detail, now)
            )
        if records:
            await conn.executemany(OUTBOX, records)

    async def _announce(
        self,
        conn: asyncpg.Connection[Any],
        row: asyncpg.Record,
        state: IncidentState,
        change: str,
        now: datetime,
    ) -> None:
        await conn.execute(OUTBOX, *update_outbox_row(self.topics, row, state, change, now))

"""The worker's writes: one accepted event, recorded with everything it causes, in the
caller's transaction. Every write is idempotent by (device_id, event_id)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec

from core.timeutil import utcnow
from schemas import topics as mqtt_topics
from schemas.events import AnyEvent, Category
from schemas.messages import AcceptedEvent, IncidentUpdate, Receipt, ReceiptStatus
from schemas.topics import KafkaTopics

LEVELS = ("grid", "community", "street", "district", "city")


@dataclass(slots=True)
class Outcome:
    recorded: int = 0
    duplicates: int = 0
    incidents_opened: int = 0
    incidents_joined: int = 0
    notifications: int = 0
    outbox: int = 0
    incident_ids: list[str] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.recorded += other.recorded
        self.duplicates += other.duplicates
        self.incidents_opened += other.incidents_opened
        self.incidents_joined += other.incidents_joined
        self.notifications += other.notifications
        self.outbox += other.outbox
        self.incident_ids.extend(other.incident_ids)


_INSERT_EVENT = """
INSERT INTO events (device_id, event_id, type, seq, occurred_at, received_at, ingress,
                    gateway_id, battery, data, kafka_partition, kafka_offset)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (device_id, event_id) DO NOTHING
RETURNING id
"""

_TOUCH_DEVICE = """
UPDATE devices
   SET last_seen_at = GREATEST(last_seen_at, $2),
       battery = CASE WHEN last_seq IS NULL OR $4 >= last_seq THEN COALESCE($3, battery)
                      ELSE battery END,
       last_seq = GREATEST(last_seq, $4),
       online = true
 WHERE device_id = $1
RETURNING grid_code, kind, address
"""

_OPEN_INCIDENT = """
SELECT incident_id, case_number, status, level, priority, version
  FROM incidents
 WHERE device_id = $1 AND category = $2 AND closed_at IS NULL
 FOR UPDATE
"""

_JOIN_INCIDENT = """
UPDATE incidents
   SET event_count = event_count + 1,
       priority = LEAST(priority, $2),
       version = version + 1,
       updated_at = clock_timestamp()
 WHERE incident_id = $1
RETURNING case_number, status, level, priority, version
"""

_NEW_INCIDENT = """
INSERT INTO incidents (case_number, category, status, priority, level, device_id, grid_code,
                       event_type, first_event_id, pressed_at, received_at)
VALUES (substr($6, 1, 6) || '-' || to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYYMMDD')
          || '-' || lpad(nextval('case_number_seq')::text, 6, '0'),
        $1, 'opened', $2, 'grid', $3, $6, $4, $5, $7, $8)
ON CONFLICT (device_id, category) WHERE closed_at IS NULL DO NOTHING
RETURNING incident_id, case_number, status, level, priority, version
"""

# On-duty officers of the device's grid cell; when nobody there is on duty, those of the
# nearest unit above that has someone (escalation never waits on an empty unit).
_RESPONDERS = """
SELECT o.officer_id, u.level, a.depth
  FROM units g
 CROSS JOIN LATERAL unnest(g.path) WITH ORDINALITY AS a(code, depth)
  JOIN officers o ON o.unit_code = a.code
  JOIN units u ON u.code = a.code
 WHERE g.code = $1 AND o.active AND o.on_duty AND o.role <> 'admin'
 ORDER BY a.depth DESC, o.officer_id
"""

_QUEUE_NOTIFICATION = """
INSERT INTO notifications (incident_id, officer_id, kind, level, reason, dedupe_key)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (dedupe_key) DO NOTHING
RETURNING id
"""

_TIMELINE = """
INSERT INTO incident_timeline (incident_id, kind, actor, event_row_id, detail)
VALUES ($1, $2, $3, $4, $5)
"""

_OUTBOX = "INSERT INTO outbox (destination, topic, key, payload) VALUES ($1, $2, $3, $4)"


class IncidentStore:
    def __init__(self, kafka_topics: KafkaTopics) -> None:
        self.topics = kafka_topics

    async def record(
        self,
        conn: asyncpg.Connection[Any],
        accepted: AcceptedEvent,
        *,
        partition: int | None = None,
        offset: int | None = None,
    ) -> Outcome:
        ev: AnyEvent = accepted.event  # type: ignore[assignment]
        out = Outcome()
        row_id = await conn.fetchval(
            _INSERT_EVENT,
            ev.device_id,
            ev.event_id,
            ev.type,
            ev.seq,
            ev.occurred_at,
            accepted.received_at,
            accepted.ingress.value,
            accepted.gateway_id,
            ev.battery,
            ev.data,
            partition,
            offset,
        )
        if row_id is None:
            out.duplicates = 1
            return out
        out.recorded = 1
        device = await conn.fetchrow(_TOUCH_DEVICE, ev.device_id, accepted.received_at, ev.battery, ev.seq)
        if device is None:  # provisioned when the gateway checked, gone now: keep the event
            return out
        category = type(ev).category
        if category in (Category.ALARM, Category.MAINTENANCE):
            await self._open_or_join(conn, ev, accepted, category, row_id, device, out)
        elif category is Category.CANCEL:
            await self._note_cancel(conn, ev, row_id, out)
        return out

    async def _open_or_join(
        self,
        conn: asyncpg.Connection[Any],
        ev: AnyEvent,
        accepted: AcceptedEvent,
        category: Category,
        row_id: int,
        device: asyncpg.Record,
        out: Outcome,
    ) -> None:
        actor = f"device:{ev.device_id}"
        for _ in range(3):
            current = await conn.fetchrow(_OPEN_INCIDENT, ev.device_id, category.value)
            if current is not None:
                joined = await conn.fetchrow(_JOIN_INCIDENT, current["incident_id"], type(ev).priority)
                incident_id = current["incident_id"]
                await conn.execute(
                    _TIMELINE,
                    incident_id,
                    "event_joined",
                    actor,
                    row_id,
                    {"event_id": ev.event_id, "type": ev.type},
                )
                out.incidents_joined += 1
                out.incident_ids.append(str(incident_id))
                await self._announce(
                    conn,
                    "joined",
                    incident_id,
                    joined,
                    ev,
                    device["grid_code"],
                    ReceiptStatus.INCIDENT_JOINED,
                    out,
                )
                return
            opened = await conn.fetchrow(
                _NEW_INCIDENT,
                category.value,
                type(ev).priority,
                ev.device_id,
                ev.type,
                ev.event_id,
                device["grid_code"],
                ev.occurred_at,
                accepted.received_at,
            )
            if opened is not None:
                break
            # Another transaction opened one between our check and insert: join it instead.
        else:
            raise RuntimeError(f"could not open or join an incident for {ev.device_id}")
        incident_id = opened["incident_id"]
        out.incidents_opened += 1
        out.incident_ids.append(str(incident_id))
        await conn.execute(
            _TIMELINE,
            incident_id,
            "opened",
            actor,
            row_id,
            {"event_id": ev.event_id, "type": ev.type, "priority": type(ev).priority},
        )
        await self._queue_notifications(conn, incident_id, device, ev, out)
        await self._announce(
            conn,
            "opened",
            incident_id,
            opened,
            ev,
            device["grid_code"],
            ReceiptStatus.INCIDENT_OPENED,
            out,
        )

    async def _queue_notifications(
        self,
        conn: asyncpg.Connection[Any],
        incident_id: Any,
        device: asyncpg.Record,
        ev: AnyEvent,
        out: Outcome,
    ) -> None:
        rows = await conn.fetch(_RESPONDERS, device["grid_code"])
        if not rows:
            await conn.execute(
                _TIMELINE,
                incident_id,
                "nobody_on_duty",
                "system:worker",
                None,
                {"grid_code": device["grid_code"]},
            )
            return
        nearest = rows[0]["depth"]
        targets = [r for r in rows if r["depth"] == nearest]
        level = targets[0]["level"]
        if level == "grid":
            reason = f"{ev.type} from {device['kind']} in your grid cell"
        else:
            reason = f"{ev.type} in grid {device['grid_code']}: no grid officer on duty"
        for t in targets:
            nid = await conn.fetchval(
                _QUEUE_NOTIFICATION,
                incident_id,
                t["officer_id"],
                "incident_opened",
                t["level"],
                reason,
                f"{incident_id}:incident_opened:{t['level']}:{t['officer_id']}",
            )
            if nid is not None:
                out.notifications += 1
        await conn.execute(
            _TIMELINE,
            incident_id,
            "notifications_queued",
            "system:worker",
            None,
            {"officers": [t["officer_id"] for t in targets], "level": level, "reason": reason},
        )

    async def _note_cancel(
        self, conn: asyncpg.Connection[Any], ev: AnyEvent, row_id: int, out: Outcome
    ) -> None:
        current = await conn.fetchrow(_OPEN_INCIDENT, ev.device_id, Category.ALARM.value)
        if current is None:
            return
        await conn.execute(
            _TIMELINE,
            current["incident_id"],
            "cancel_requested",
            f"device:{ev.device_id}",
            row_id,
            {"event_id": ev.event_id, "cancels": ev.data.get("cancels")},
        )

    async def _announce(
        self,
        conn: asyncpg.Connection[Any],
        change: str,
        incident_id: Any,
        row: asyncpg.Record,
        ev: AnyEvent,
        grid_code: str,
        receipt_status: ReceiptStatus,
        out: Outcome,
    ) -> None:
        now = utcnow()
        update = IncidentUpdate(
            incident_id=str(incident_id),
            case_number=row["case_number"],
            change=change,
            status=row["status"],
            priority=row["priority"],
            level=row["level"],
            device_id=ev.device_id,
            grid_code=grid_code,
            at=now,
            event_id=ev.event_id,
            event_type=ev.type,
            version=row["version"],
        )
        receipt = Receipt(
            status=receipt_status,
            device_id=ev.device_id,
            at=now,
            event_id=ev.event_id,
            incident_id=str(incident_id),
            case_number=row["case_number"],
        )
        await conn.executemany(
            _OUTBOX,
            [
                ("kafka", self.topics.incident_updates, str(incident_id), msgspec.json.encode(update)),
                ("mqtt", mqtt_topics.device_receipts(ev.device_id), None, msgspec.json.encode(receipt)),
            ],
        )
        out.outbox += 2

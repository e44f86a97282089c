"""The worker's writes: one accepted event, recorded with everything it causes, in the
caller's transaction. Every write is idempotent by (device_id, event_id)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import msgspec

from core.incident_model import LEVELS, Cancel, DeviceReceipt, IllegalAction, TellNotified, TimelineEntry
from core.incident_service import IncidentService, state_from_row
from core.timeutil import utcnow
from schemas import topics as mqtt_topics
from schemas.events import AnyEvent, Category
from schemas.messages import AcceptedEvent, IncidentUpdate, OfficerNotification, Receipt, ReceiptStatus
from schemas.topics import KafkaTopics


class HandedNotification(NamedTuple):
    """A notification queued by the worker's batch, with its page, for a notifier in the same
    process to deliver once the batch is committed."""

    id: int
    incident_id: Any
    page: OfficerNotification


@dataclass(slots=True)
class Outcome:
    recorded: int = 0
    duplicates: int = 0
    incidents_opened: int = 0
    incidents_joined: int = 0
    majors_opened: int = 0
    cancels: int = 0
    incident_ids: list[str] = field(default_factory=list)
    handed: list[HandedNotification] = field(default_factory=list)
    to_claim: bool = False  # the per-event path took effect: it may have queued notifications

    def add(self, other: Outcome) -> None:
        self.recorded += other.recorded
        self.duplicates += other.duplicates
        self.incidents_opened += other.incidents_opened
        self.incidents_joined += other.incidents_joined
        self.majors_opened += other.majors_opened
        self.cancels += other.cancels
        self.incident_ids.extend(other.incident_ids)
        self.handed.extend(other.handed)
        self.to_claim = self.to_claim or other.to_claim


@dataclass(frozen=True, slots=True)
class Correlation:
    """Several devices of one building or grid cell alarming within `window` form one major
    incident that starts at `start_level` (the community centre by default)."""

    window: timedelta = timedelta(seconds=120)
    threshold: int = 4  # distinct devices, counting the new one
    start_level: int = 1


_INSERT_EVENT = """
INSERT INTO events (device_id, event_id, type, seq, occurred_at, received_at, ingress,
                    gateway_id, battery, data, kafka_partition, kafka_offset, clock_offset_s)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (device_id, event_id) DO NOTHING
RETURNING id
"""

_INSERT_HEARTBEAT = """
INSERT INTO device_heartbeats (device_id, event_id, seq, occurred_at, received_at, battery, ingress,
                               gateway_id, clock_offset_s, data)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (device_id, event_id) DO NOTHING
RETURNING 1
"""

_TOUCH_DEVICE = """
UPDATE devices
   SET last_seen_at = GREATEST(last_seen_at, $2),
       battery = CASE WHEN last_seq IS NULL OR $4 >= last_seq THEN COALESCE($3, battery)
                      ELSE battery END,
       last_seq = GREATEST(last_seq, $4),
       online = true
 WHERE device_id = $1
RETURNING grid_code, kind, address, building
"""

_OPEN_OF_DEVICE = """
SELECT incident_id, case_number, status, level, priority, version, major_id
  FROM incidents
 WHERE device_id = $1 AND category = $2 AND closed_at IS NULL
 FOR UPDATE
"""

_JOIN = """
UPDATE incidents
   SET event_count = event_count + 1,
       priority = LEAST(priority, $2),
       version = version + 1,
       updated_at = clock_timestamp()
 WHERE incident_id = $1
RETURNING case_number, status, level, priority, version, grid_code
"""

_TIMELINE = """
INSERT INTO incident_timeline (incident_id, at, kind, actor, event_row_id, detail)
VALUES ($1, $2, $3, $4, $5, $6)
"""

_OUTBOX = "INSERT INTO outbox (destination, topic, key, payload) VALUES ($1, $2, $3, $4)"

# Open alarm incidents of other devices in the same building (or grid cell) opened recently,
# oldest first (they join a major incident in this order, whichever way they were written).
_NEIGHBOURS = """
SELECT i.incident_id, i.device_id, i.major_id
  FROM incidents i
  JOIN devices d ON d.device_id = i.device_id
 WHERE i.category = 'alarm' AND i.closed_at IS NULL AND NOT i.is_major
   AND i.grid_code = $1 AND ($2 = '' OR d.building = $2)
   AND i.opened_at >= $3
 ORDER BY i.opened_at, i.pressed_at, i.case_number
"""

_OPEN_MAJOR = """
SELECT incident_id FROM incidents
 WHERE is_major AND closed_at IS NULL AND correlation_key = $1
"""


def open_reason(ev: AnyEvent, device: Any) -> str:
    """Why an incident was opened, in words (on the timeline and in the officer's page)."""
    return f"{ev.type} from {device['kind']} at {device['address'] or device['grid_code']}"


def correlation_key(device: Any) -> str:
    """Alarms correlate per building, or per grid cell for devices outside a building."""
    building = device["building"] or ""
    return f"{device['grid_code']}/{building}" if building else device["grid_code"]


def occurred_at(accepted: AcceptedEvent) -> datetime:
    """When the event happened, as recorded: the device's clock, or the platform's receive
    time when the gateway flagged the device's clock as off."""
    if accepted.clock_offset_s is not None:
        return accepted.received_at
    return accepted.event.occurred_at


class IncidentStore:
    def __init__(
        self,
        kafka_topics: KafkaTopics,
        *,
        correlation: Correlation | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.topics = kafka_topics
        self.service = IncidentService(kafka_topics)
        self.correlation = correlation or Correlation()
        self.clock = clock

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
        if type(ev).category is Category.HEALTH:
            return await self._record_heartbeat(conn, accepted, out)
        row_id = await conn.fetchval(
            _INSERT_EVENT,
            ev.device_id,
            ev.event_id,
            ev.type,
            ev.seq,
            occurred_at(accepted),
            accepted.received_at,
            accepted.ingress.value,
            accepted.gateway_id,
            ev.battery,
            ev.data,
            partition,
            offset,
            accepted.clock_offset_s,
        )
        if row_id is None:
            out.duplicates = 1
            return out
        out.recorded = 1
        device = await conn.fetchrow(_TOUCH_DEVICE, ev.device_id, accepted.received_at, ev.battery, ev.seq)
        if device is None:  # provisioned when the gateway checked, gone now: keep the event
            return out
        await self.take_effect(conn, accepted, row_id, device, out)
        return out

    async def _record_heartbeat(self, conn: asyncpg.Connection[Any], accepted: AcceptedEvent, out: Outcome) -> Outcome:
        """A heartbeat: its row in device_heartbeats (once), and its device's health."""
        ev: AnyEvent = accepted.event  # type: ignore[assignment]
        new = await conn.fetchval(
            _INSERT_HEARTBEAT,
            ev.device_id,
            ev.event_id,
            ev.seq,
            occurred_at(accepted),
            accepted.received_at,
            ev.battery,
            accepted.ingress.value,
            accepted.gateway_id,
            accepted.clock_offset_s,
            ev.data or None,
        )
        if new is None:
            out.duplicates = 1
            return out
        out.recorded = 1
        await conn.execute(_TOUCH_DEVICE, ev.device_id, accepted.received_at, ev.battery, ev.seq)
        return out

    async def take_effect(
        self, conn: asyncpg.Connection[Any], accepted: AcceptedEvent, row_id: int, device: Any, out: Outcome
    ) -> None:
        """What a recorded event causes: an incident opened or joined, a cancel. `device` has
        the device's grid_code, kind, address and building."""
        ev: AnyEvent = accepted.event  # type: ignore[assignment]
        category = type(ev).category
        now = self.clock()
        if category in (Category.ALARM, Category.MAINTENANCE, Category.CANCEL):
            out.to_claim = True
        if category in (Category.ALARM, Category.MAINTENANCE):
            await self._open_or_join(conn, ev, accepted, category, row_id, device, out, now)
        elif category is Category.CANCEL:
            await self._cancel(conn, ev, row_id, out, accepted.received_at)

    async def _open_or_join(
        self,
        conn: asyncpg.Connection[Any],
        ev: AnyEvent,
        accepted: AcceptedEvent,
        category: Category,
        row_id: int,
        device: asyncpg.Record,
        out: Outcome,
        now: datetime,
    ) -> None:
        actor = f"device:{ev.device_id}"
        for _ in range(3):
            current = await conn.fetchrow(_OPEN_OF_DEVICE, ev.device_id, category.value)
            if current is not None:
                await self._join(conn, current, ev, row_id, out, now)
                return
            if category is Category.ALARM and await self._correlate(conn, ev, accepted, row_id, device, out, now):
                return
            opened = await self._open(
                conn,
                ev,
                accepted,
                device,
                now,
                actor=actor,
                reason=open_reason(ev, device),
                event_row_id=row_id,
            )
            if opened is not None:
                out.incidents_opened += 1
                out.incident_ids.append(str(opened.incident_id))
                return
            # Another transaction opened one between our check and insert: join it instead.
        raise RuntimeError(f"could not open or join an incident for {ev.device_id}")

    async def _open(
        self,
        conn: asyncpg.Connection[Any],
        ev: AnyEvent,
        accepted: AcceptedEvent,
        device: asyncpg.Record,
        now: datetime,
        **kwargs: Any,
    ) -> Any:
        """Open an incident for this event (kwargs: actor, reason, category, and the rest of
        IncidentService.open's options)."""
        kwargs.setdefault("category", type(ev).category.value)
        kwargs.setdefault("device_id", ev.device_id)
        return await self.service.open(
            conn,
            priority=type(ev).priority,
            grid_code=device["grid_code"],
            event_type=ev.type,
            event_id=ev.event_id,
            pressed_at=occurred_at(accepted),
            received_at=accepted.received_at,
            now=now,
            **kwargs,
        )

    async def _join(
        self,
        conn: asyncpg.Connection[Any],
        current: asyncpg.Record,
        ev: AnyEvent,
        row_id: int,
        out: Outcome,
        now: datetime,
    ) -> None:
        incident_id = current["incident_id"]
        joined = await conn.fetchrow(_JOIN, incident_id, type(ev).priority)
        await conn.execute(
            _TIMELINE,
            incident_id,
            now,
            "event_joined",
            f"device:{ev.device_id}",
            row_id,
            {"event_id": ev.event_id, "type": ev.type},
        )
        out.incidents_joined += 1
        out.incident_ids.append(str(incident_id))
        await self._announce_join(conn, incident_id, joined, ev, now)

    async def _announce_join(
        self,
        conn: asyncpg.Connection[Any],
        incident_id: Any,
        row: asyncpg.Record,
        ev: AnyEvent,
        now: datetime,
    ) -> None:
        update = IncidentUpdate(
            incident_id=str(incident_id),
            case_number=row["case_number"],
            change="joined",
            status=row["status"],
            priority=row["priority"],
            level=row["level"],
            device_id=ev.device_id,
            grid_code=row["grid_code"],
            at=now,
            event_id=ev.event_id,
            event_type=ev.type,
            version=row["version"],
        )
        receipt = Receipt(
            status=ReceiptStatus.INCIDENT_JOINED,
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
        await conn.execute("SELECT pg_notify('pingan_outbox', '')")

    async def _correlate(
        self,
        conn: asyncpg.Connection[Any],
        ev: AnyEvent,
        accepted: AcceptedEvent,
        row_id: int,
        device: asyncpg.Record,
        out: Outcome,
        now: datetime,
    ) -> bool:
        """Join or form a major incident when the building (or grid cell) is alarming.
        Returns True when the event was taken care of."""
        c = self.correlation
        building = device["building"] or ""
        key = correlation_key(device)
        # One correlator per building or grid cell at a time, across workers.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "correlate:" + key)
        major_id = await conn.fetchval(_OPEN_MAJOR, key)
        neighbours = await conn.fetch(_NEIGHBOURS, device["grid_code"], building, now - c.window)
        if major_id is None and len({r["device_id"] for r in neighbours}) + 1 < c.threshold:
            return False
        if major_id is None:
            opened = await self._open(
                conn,
                ev,
                accepted,
                device,
                now,
                device_id=None,
                actor="system:correlator",
                reason=(
                    f"major incident: {len(neighbours) + 1} devices alarming in "
                    f"{'building ' + building if building else 'grid ' + device['grid_code']} "
                    f"within {int(c.window.total_seconds())} s"
                ),
                start_level=c.start_level,
                is_major=True,
                correlation_key=key,
            )
            if opened is None:  # pragma: no cover - the advisory lock makes this unreachable
                raise RuntimeError(f"major incident for {key} appeared concurrently")
            major_id = opened.incident_id
            out.majors_opened += 1
            # The neighbours' own incidents become members: their clocks stop, the major's runs.
            for r in neighbours:
                await self._make_member(conn, r["incident_id"], major_id, now)
        # The new alarm gets its own incident (its device, its receipts), as a member.
        member = await self._open(
            conn,
            ev,
            accepted,
            device,
            now,
            actor=f"device:{ev.device_id}",
            reason=f"{ev.type} from {device['kind']} at {device['address']} (part of a major incident)",
            event_row_id=row_id,
            quiet=True,
        )
        if member is None:
            return False
        await self._make_member(conn, member.incident_id, major_id, now)
        out.incidents_opened += 1
        out.incident_ids.append(str(member.incident_id))
        return True

    async def _make_member(self, conn: asyncpg.Connection[Any], incident_id: Any, major_id: Any, now: datetime) -> None:
        await conn.execute(
            "UPDATE incidents SET major_id = $2, awaiting = 'none', deadline_at = NULL, remind_at = NULL, "
            "due_at = NULL, version = version + 1, updated_at = clock_timestamp() "
            "WHERE incident_id = $1 AND major_id IS NULL",
            incident_id,
            major_id,
        )
        await conn.execute(
            _TIMELINE,
            incident_id,
            now,
            "joined_major",
            "system:correlator",
            None,
            {"major_id": str(major_id)},
        )
        await conn.execute(
            "UPDATE incidents SET event_count = event_count + 1, version = version + 1, "
            "updated_at = clock_timestamp() WHERE incident_id = $1",
            major_id,
        )
        await conn.execute(
            _TIMELINE,
            major_id,
            now,
            "member_added",
            "system:correlator",
            None,
            {"incident_id": str(incident_id)},
        )

    async def _cancel(
        self, conn: asyncpg.Connection[Any], ev: AnyEvent, row_id: int, out: Outcome, now: datetime
    ) -> None:
        """`now` is when the gateway received the cancel: the grace period is measured on the
        platform's clock, from the press's arrival to the cancel's arrival."""
        current = await conn.fetchrow(_OPEN_OF_DEVICE, ev.device_id, Category.ALARM.value)
        if current is None:
            return
        try:
            await self.service.perform(
                conn,
                current["incident_id"],
                Cancel(f"device:{ev.device_id}"),
                now,
                change="cancelled",
                event_row_id=row_id,
            )
            out.cancels += 1
        except IllegalAction as exc:
            row = await self.service.load(conn, current["incident_id"], lock=True)
            state = state_from_row(row)
            await self.service.carry_out(
                conn,
                row,
                state,
                [
                    TimelineEntry(
                        "cancel_refused", f"device:{ev.device_id}", {"code": exc.code, "reason": exc.message}
                    ),
                    TellNotified("cancel_refused", f"the resident pressed cancel, but {exc.message}"),
                    DeviceReceipt("cancel_refused", detail=exc.message),
                ],
                now,
                change="cancel_refused",
            )


__all__ = ["LEVELS", "Correlation", "IncidentStore", "Outcome"]

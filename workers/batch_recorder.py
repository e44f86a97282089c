"""A batch of accepted events recorded with a handful of set-based statements.

The escalation worker hands every batch it fetched from Kafka to `BatchRecorder.record`, inside
one transaction. The common case (a heartbeat; an alarm from a device with nothing open, where
no building is alarming and a grid officer is on shift) costs a few statements for the whole
batch instead of a dozen round trips per event:

1. every event row in one INSERT (idempotent by (device_id, event_id); ids in batch order);
2. every device touched once (last seen, battery, sequence);
3. the open incidents, the correlation counts, the policies and the grid officers on shift of
   the whole batch read in four statements;
4. the new incidents, their timeline, notifications and outbox rows written in four more.

Everything else (a press that joins an open incident, a cancel, a building that is alarming,
nobody on shift, a concurrent opener) is handed, in batch order, to the per-event path of
`IncidentStore`, after the bulk writes. Events of one device stay in order: once one of a
device's events takes the per-event path, so do its later events in the batch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from core.incident_model import LEVELS, IncidentState, Policy, open_incident
from core.incident_service import (
    GRID_RESPONDERS_MANY,
    INSERT_MANY,
    OUTBOX,
    POLICIES_MANY,
    QUEUE,
    TIMELINE,
    policy_from_row,
    receipt_outbox_row,
    update_outbox_row,
)
from schemas.events import AnyEvent, Category
from schemas.messages import AcceptedEvent
from workers.incident_store import IncidentStore, Outcome, correlation_key, open_reason

_INSERT_EVENTS = """
INSERT INTO events (device_id, event_id, type, seq, occurred_at, received_at, ingress,
                    gateway_id, battery, data, kafka_partition, kafka_offset)
SELECT v.device_id, v.event_id, v.type, v.seq, v.occurred_at, v.received_at, v.ingress,
       v.gateway_id, v.battery, v.data::jsonb, v.kafka_partition, v.kafka_offset
  FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[],
              $6::timestamptz[], $7::text[], $8::text[], $9::int[], $10::text[], $11::int[],
              $12::bigint[])
       WITH ORDINALITY AS v(device_id, event_id, type, seq, occurred_at, received_at, ingress,
                            gateway_id, battery, data, kafka_partition, kafka_offset, ord)
 ORDER BY v.ord
ON CONFLICT (device_id, event_id) DO NOTHING
RETURNING id, device_id, event_id
"""

# One row per device: the latest time seen, and battery and sequence of its highest sequence.
_TOUCH_DEVICES = """
UPDATE devices d
   SET last_seen_at = GREATEST(d.last_seen_at, v.seen_at),
       battery = CASE WHEN d.last_seq IS NULL OR v.seq IS NULL OR v.seq >= d.last_seq
                      THEN COALESCE(v.battery, d.battery) ELSE d.battery END,
       last_seq = GREATEST(d.last_seq, v.seq),
       online = true
  FROM unnest($1::text[], $2::timestamptz[], $3::int[], $4::bigint[]) AS v(device_id, seen_at, battery, seq)
 WHERE d.device_id = v.device_id
RETURNING d.device_id, d.grid_code, d.kind, d.address, d.building
"""

_OPEN_OF_DEVICES = """
SELECT device_id, category
  FROM incidents
 WHERE closed_at IS NULL AND device_id = ANY($1::text[])
   AND (device_id, category) IN (SELECT * FROM unnest($1::text[], $2::text[]))
 FOR UPDATE
"""

# One correlator per building or grid cell at a time, across workers: the keys of the batch,
# locked in one order (no deadlock between two workers' batches).
_LOCK_KEYS = """
SELECT pg_advisory_xact_lock(h)
  FROM (SELECT DISTINCT hashtext('correlate:' || k) AS h FROM unnest($1::text[]) AS k ORDER BY 1) s
"""

# Per correlation key: its open major incident, and how many devices of it have an open,
# recent alarm incident of their own (see IncidentStore._correlate).
_CORRELATION = """
SELECT k.key,
       EXISTS (SELECT 1 FROM incidents m
                WHERE m.is_major AND m.closed_at IS NULL AND m.correlation_key = k.key) AS has_major,
       (SELECT count(DISTINCT i.device_id)
          FROM incidents i JOIN devices d ON d.device_id = i.device_id
         WHERE i.category = 'alarm' AND i.closed_at IS NULL AND NOT i.is_major
           AND i.grid_code = k.grid_code AND (k.building = '' OR d.building = k.building)
           AND i.opened_at >= $4) AS devices
  FROM unnest($1::text[], $2::text[], $3::text[]) AS k(key, grid_code, building)
"""


@dataclass(slots=True)
class _Item:
    index: int
    accepted: AcceptedEvent
    ev: AnyEvent
    partition: int | None
    offset: int | None
    row_id: int | None = None


@dataclass(slots=True)
class _Open:
    item: _Item
    device: Any
    policy: Policy
    state: IncidentState
    officers: list[str]
    reason: str


class BatchRecorder:
    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    async def record(
        self, conn: asyncpg.Connection[Any], batch: list[tuple[AcceptedEvent, int | None, int | None]]
    ) -> Outcome:
        """Record (accepted event, Kafka partition, offset) items in the caller's transaction."""
        out = Outcome()
        items = [_Item(i, a, a.event, p, o) for i, (a, p, o) in enumerate(batch)]  # type: ignore[arg-type]
        new = await self._insert_events(conn, items)
        out.recorded = len(new)
        out.duplicates = len(items) - len(new)
        devices = await self._touch_devices(conn, new)
        acting = [it for it in new if it.ev.device_id in devices and type(it.ev).category is not Category.HEALTH]
        if not acting:
            return out
        now = self.store.clock()
        fast, slow = await self._plan(conn, acting, devices, now)
        if fast:
            skipped = await self._open_many(conn, fast, now, out)
            slow.extend(skipped)
        for it in sorted(slow, key=lambda it: it.index):
            assert it.row_id is not None
            await self.store.take_effect(conn, it.accepted, it.row_id, devices[it.ev.device_id], out)
        return out

    # ------------------------------------------------------------ events and devices

    async def _insert_events(self, conn: asyncpg.Connection[Any], items: list[_Item]) -> list[_Item]:
        """Insert the event rows; returns the items that were new (in batch order)."""
        cols: list[list[Any]] = [[] for _ in range(12)]
        for it in items:
            ev, a = it.ev, it.accepted
            for col, value in zip(
                cols,
                (
                    ev.device_id,
                    ev.event_id,
                    ev.type,
                    ev.seq,
                    ev.occurred_at,
                    a.received_at,
                    a.ingress.value,
                    a.gateway_id,
                    ev.battery,
                    orjson.dumps(ev.data).decode(),
                    it.partition,
                    it.offset,
                ),
                strict=True,
            ):
                col.append(value)
        rows = await conn.fetch(_INSERT_EVENTS, *cols)
        ids = {(r["device_id"], r["event_id"]): r["id"] for r in rows}
        new = []
        for it in items:
            row_id = ids.pop((it.ev.device_id, it.ev.event_id), None)  # a repeat in the batch: once
            if row_id is not None:
                it.row_id = row_id
                new.append(it)
        return new

    async def _touch_devices(self, conn: asyncpg.Connection[Any], new: list[_Item]) -> dict[str, Any]:
        """Update each device once; returns device_id -> row (grid_code, kind, address, building)."""
        latest: dict[str, Any] = {}
        best: dict[str, _Item] = {}
        for it in new:
            ev, at = it.ev, it.accepted.received_at
            d = ev.device_id
            latest[d] = max(latest.get(d, at), at)
            b = best.get(d)
            if b is None or (ev.seq is not None and (b.ev.seq is None or ev.seq >= b.ev.seq)):
                best[d] = it
        if not latest:
            return {}
        ids = list(latest)
        rows = await conn.fetch(
            _TOUCH_DEVICES,
            ids,
            [latest[d] for d in ids],
            [best[d].ev.battery for d in ids],
            [best[d].ev.seq for d in ids],
        )
        return {r["device_id"]: r for r in rows}

    # ------------------------------------------------------------ which take the fast path

    async def _plan(
        self, conn: asyncpg.Connection[Any], acting: list[_Item], devices: dict[str, Any], now: datetime
    ) -> tuple[list[_Open], list[_Item]]:
        candidates = [it for it in acting if type(it.ev).category in (Category.ALARM, Category.MAINTENANCE)]
        open_pairs: set[tuple[str, str]] = set()
        if candidates:
            rows = await conn.fetch(
                _OPEN_OF_DEVICES,
                [it.ev.device_id for it in candidates],
                [type(it.ev).category.value for it in candidates],
            )
            open_pairs = {(r["device_id"], r["category"]) for r in rows}
        alarm_keys = {
            correlation_key(devices[it.ev.device_id])
            for it in candidates
            if type(it.ev).category is Category.ALARM and (it.ev.device_id, "alarm") not in open_pairs
        }
        correlating = await self._correlation(conn, alarm_keys, devices, now)
        wanted = {(devices[it.ev.device_id]["grid_code"], type(it.ev).priority) for it in candidates}
        policies = await self._policies(conn, wanted)
        officers = await self._grid_officers(conn, {g for g, _ in wanted}, now)

        threshold = self.store.correlation.threshold
        fast: list[_Open] = []
        slow: list[_Item] = []
        slow_devices: set[str] = set()
        seen: set[tuple[str, str]] = set()
        for it in acting:
            ev = it.ev
            category = type(ev).category
            device = devices[ev.device_id]
            pair = (ev.device_id, category.value)
            go_slow = ev.device_id in slow_devices or category is Category.CANCEL or pair in open_pairs
            go_slow = go_slow or pair in seen  # a second press in the batch joins the first
            seen.add(pair)
            if category is Category.ALARM and pair not in open_pairs:
                key = correlation_key(device)
                has_major, count = correlating[key]
                # This alarm opens an incident either way: it counts for the alarms after it.
                correlating[key] = (has_major, count + 1)
                go_slow = go_slow or has_major or count + 1 >= threshold
            policy = policies.get((device["grid_code"], ev.priority))
            if not go_slow and policy is not None:
                state = open_incident(policy, pressed_at=it.accepted.received_at, now=now)
                on_shift = officers.get(device["grid_code"], [])
                if state.level_index == 0 and on_shift:
                    fast.append(_Open(it, device, policy, state, on_shift, open_reason(ev, device)))
                    continue
            slow.append(it)
            slow_devices.add(ev.device_id)
        return fast, slow

    async def _correlation(
        self, conn: asyncpg.Connection[Any], keys: set[str], devices: dict[str, Any], now: datetime
    ) -> dict[str, tuple[bool, int]]:
        if not keys:
            return {}
        ordered = sorted(keys)
        await conn.execute(_LOCK_KEYS, ordered)
        grid_of: dict[str, tuple[str, str]] = {}
        for d in devices.values():
            grid_of.setdefault(correlation_key(d), (d["grid_code"], d["building"] or ""))
        rows = await conn.fetch(
            _CORRELATION,
            ordered,
            [grid_of[k][0] for k in ordered],
            [grid_of[k][1] for k in ordered],
            now - self.store.correlation.window,
        )
        return {r["key"]: (r["has_major"], r["devices"]) for r in rows}

    async def _policies(
        self, conn: asyncpg.Connection[Any], wanted: set[tuple[str, int]]
    ) -> dict[tuple[str, int], Policy]:
        if not wanted:
            return {}
        pairs = sorted(wanted)
        rows = await conn.fetch(POLICIES_MANY, [g for g, _ in pairs], [p for _, p in pairs])
        found = {(r["grid_code"], r["priority"]): r for r in rows}
        return {(g, p): policy_from_row(p, found.get((g, p))) for g, p in pairs}

    async def _grid_officers(
        self, conn: asyncpg.Connection[Any], grids: set[str], now: datetime
    ) -> dict[str, list[str]]:
        if not grids:
            return {}
        on_shift: dict[str, list[str]] = defaultdict(list)
        for r in await conn.fetch(GRID_RESPONDERS_MANY, sorted(grids), now):
            on_shift[r["grid_code"]].append(r["officer_id"])
        return on_shift

    # ------------------------------------------------------------ the fast path's writes

    async def _open_many(
        self, conn: asyncpg.Connection[Any], fast: list[_Open], now: datetime, out: Outcome
    ) -> list[_Item]:
        """Open one incident per planned item, with its timeline, notifications and outbox rows
        (what IncidentService.open does for one). Returns the items another transaction beat
        us to (their device has an open incident now): they take the per-event path."""
        cols: list[list[Any]] = [[] for _ in range(17)]
        for o in fast:
            ev, s = o.item.ev, o.state
            for col, value in zip(
                cols,
                (
                    type(ev).category.value,
                    s.status,
                    ev.priority,
                    s.level,
                    s.level_index,
                    ev.device_id,
                    o.device["grid_code"],
                    ev.type,
                    ev.event_id,
                    ev.occurred_at,
                    o.item.accepted.received_at,
                    now,
                    orjson.dumps(o.policy.to_json()).decode(),
                    s.awaiting,
                    s.deadline_at,
                    s.remind_at,
                    s.due_at,
                ),
                strict=True,
            ):
                col.append(value)
        rows = await conn.fetch(INSERT_MANY, *cols)
        opened = {(r["device_id"], r["category"]): r for r in rows}
        timeline, queued, outbox, beaten = [], [], [], []
        for o in fast:
            ev, s = o.item.ev, o.state
            r = opened.get((ev.device_id, type(ev).category.value))
            if r is None:
                beaten.append(o.item)
                continue
            incident_id, case_number = r["incident_id"], r["case_number"]
            level = LEVELS[s.level_index]
            detail = {"event_id": ev.event_id, "type": ev.type, "priority": ev.priority, "level": s.level}
            timeline.append(
                (
                    incident_id,
                    now,
                    "opened",
                    f"device:{ev.device_id}",
                    o.item.row_id,
                    detail | {"policy": o.policy.source},
                )
            )
            queued.extend(
                (
                    incident_id,
                    officer,
                    "incident_opened",
                    level,
                    o.reason,
                    f"{incident_id}:v{s.version}:incident_opened:{officer}",
                    s.version,
                )
                for officer in o.officers
            )
            timeline.append(
                (
                    incident_id,
                    now,
                    "notifications_queued",
                    "system:dispatch",
                    None,
                    {"officers": o.officers, "kind": "incident_opened", "level": level, "reason": o.reason},
                )
            )
            outbox.append(
                receipt_outbox_row(ev.device_id, ev.event_id, incident_id, case_number, "incident_opened", None, now)
            )
            row = {
                "incident_id": incident_id,
                "case_number": case_number,
                "priority": ev.priority,
                "device_id": ev.device_id,
                "grid_code": o.device["grid_code"],
                "first_event_id": ev.event_id,
                "event_type": ev.type,
            }
            outbox.append(update_outbox_row(self.store.topics, row, s, "opened", now))
            out.incidents_opened += 1
            out.incident_ids.append(str(incident_id))
        if timeline:
            await conn.executemany(TIMELINE, timeline)
            await conn.executemany(QUEUE, queued)
            await conn.executemany(OUTBOX, outbox)
            await conn.execute("SELECT pg_notify('pingan_notifications', ''), pg_notify('pingan_outbox', '')")
        return beaten

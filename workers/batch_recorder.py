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
    INSERT_MANY,
    policy_from_row,
    receipt_outbox_row,
    update_outbox_row,
)
from schemas.events import AnyEvent, Category
from schemas.messages import AcceptedEvent
from workers.incident_store import IncidentStore, Outcome, correlation_key, occurred_at, open_reason

# The batch's event rows (idempotent by (device_id, event_id); ids in batch order) and, in the
# same statement, each device touched once by its new events: the latest time seen, and the
# battery and sequence of its highest sequence.
_RECORD_EVENTS = """
WITH ins AS (
    INSERT INTO events (device_id, event_id, type, seq, occurred_at, received_at, ingress,
                        gateway_id, battery, data, kafka_partition, kafka_offset, clock_offset_s)
    SELECT v.device_id, v.event_id, v.type, v.seq, v.occurred_at, v.received_at, v.ingress,
           v.gateway_id, v.battery, v.data::jsonb, v.kafka_partition, v.kafka_offset, v.clock_offset_s
      FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[],
                  $6::timestamptz[], $7::text[], $8::text[], $9::int[], $10::text[], $11::int[],
                  $12::bigint[], $13::float8[])
           WITH ORDINALITY AS v(device_id, event_id, type, seq, occurred_at, received_at, ingress,
                                gateway_id, battery, data, kafka_partition, kafka_offset,
                                clock_offset_s, ord)
     ORDER BY v.ord
    ON CONFLICT (device_id, event_id) DO NOTHING
    RETURNING id, device_id, event_id, seq, received_at, battery
), latest AS (
    SELECT device_id, max(seq) AS seq, max(received_at) AS seen_at,
           (array_agg(battery ORDER BY seq DESC, id DESC) FILTER (WHERE battery IS NOT NULL))[1] AS battery
      FROM ins
     GROUP BY device_id
), touched AS (
    UPDATE devices d
       SET last_seen_at = GREATEST(d.last_seen_at, v.seen_at),
           battery = CASE WHEN d.last_seq IS NULL OR v.seq >= d.last_seq
                          THEN COALESCE(v.battery, d.battery) ELSE d.battery END,
           last_seq = GREATEST(d.last_seq, v.seq),
           online = true
      FROM latest v
     WHERE d.device_id = v.device_id
    RETURNING d.device_id, d.grid_code, d.kind, d.address, d.building
)
SELECT 'event' AS row_kind, id, device_id, event_id, NULL AS grid_code, NULL AS kind, NULL AS address,
       NULL AS building
  FROM ins
UNION ALL
SELECT 'device', NULL, device_id, NULL, grid_code, kind, address, building FROM touched
"""

# What the plan of a batch needs, in one statement: the open incidents of the pressing devices
# (locked), the policy of each (grid cell, priority) as IncidentService's _POLICY finds it, and
# the grid officers on shift of each grid cell as its _RESPONDERS finds them at level 0.
_PLAN_READS = """
WITH open AS (
    SELECT device_id, category
      FROM incidents
     WHERE closed_at IS NULL AND device_id = ANY($1::text[])
       AND (device_id, category) IN (SELECT * FROM unnest($1::text[], $2::text[]))
       FOR UPDATE
), policies AS (
    SELECT q.grid_code, q.priority, p.unit_code, p.levels, p.cancel_grace_s
      FROM unnest($3::text[], $4::int[]) AS q(grid_code, priority)
     CROSS JOIN LATERAL (
           SELECT p.unit_code, p.levels, p.cancel_grace_s
             FROM units g
            CROSS JOIN LATERAL unnest(g.path) WITH ORDINALITY AS a(code, depth)
             JOIN escalation_policies p ON p.unit_code = a.code AND p.priority = q.priority
            WHERE g.code = q.grid_code
            ORDER BY a.depth DESC
            LIMIT 1) p
), officers AS (
    SELECT g.code AS grid_code, o.officer_id
      FROM units g
      JOIN officers o ON o.unit_code = g.path[array_length(g.path, 1)]
     WHERE g.code = ANY($3::text[]) AND o.active AND o.role <> 'admin'
       AND EXISTS (SELECT 1 FROM duty_shifts s WHERE s.officer_id = o.officer_id AND s.during @> $5::timestamptz)
)
SELECT 'open' AS row_kind, device_id AS a, category AS b, NULL::int AS priority, NULL::text AS unit_code,
       NULL::jsonb AS levels, NULL::int AS cancel_grace_s
  FROM open
UNION ALL
SELECT 'policy', grid_code, NULL, priority, unit_code, levels, cancel_grace_s FROM policies
UNION ALL
SELECT 'officer', grid_code, officer_id, NULL, NULL, NULL, NULL FROM officers
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


# The new incidents' timeline entries, notifications and outbox rows, and the wake-ups of the
# notifiers ($18) and the relay, in one statement (timeline and outbox rows keep the given order).
_EFFECTS = """
WITH timeline AS (
    INSERT INTO incident_timeline (incident_id, at, kind, actor, event_row_id, detail)
    SELECT t.incident_id, t.at, t.kind, t.actor, t.event_row_id, t.detail::jsonb
      FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[], $6::text[])
           WITH ORDINALITY AS t(incident_id, at, kind, actor, event_row_id, detail, ord)
     ORDER BY t.ord
), queued AS (
    INSERT INTO notifications (incident_id, officer_id, kind, level, reason, dedupe_key, incident_version)
    SELECT * FROM unnest($7::uuid[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::int[])
    ON CONFLICT (dedupe_key) DO NOTHING
), outbox AS (
    INSERT INTO outbox (destination, topic, key, payload)
    SELECT o.destination, o.topic, o.key, o.payload
      FROM unnest($14::text[], $15::text[], $16::text[], $17::bytea[])
           WITH ORDINALITY AS o(destination, topic, key, payload, ord)
     ORDER BY o.ord
)
SELECT CASE WHEN $18::bool THEN pg_notify('pingan_notifications', '') END, pg_notify('pingan_outbox', '')
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
        # NOTIFY the notifiers of the notifications queued; off when the worker hands them to a
        # notifier in its own process after the commit (the other notifiers then find them by
        # their poll, should this process die first).
        self.notify_notifiers = True

    async def record(
        self, conn: asyncpg.Connection[Any], batch: list[tuple[AcceptedEvent, int | None, int | None]]
    ) -> Outcome:
        """Record (accepted event, Kafka partition, offset) items in the caller's transaction."""
        out = Outcome()
        items = [_Item(i, a, a.event, p, o) for i, (a, p, o) in enumerate(batch)]  # type: ignore[arg-type]
        new, devices = await self._record_events(conn, items)
        out.recorded = len(new)
        out.duplicates = len(items) - len(new)
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

    async def _record_events(
        self, conn: asyncpg.Connection[Any], items: list[_Item]
    ) -> tuple[list[_Item], dict[str, Any]]:
        """Insert the event rows and touch their devices. Returns the items that were new (in
        batch order) and device_id -> device row (grid_code, kind, address, building)."""
        cols: list[list[Any]] = [[] for _ in range(13)]
        for it in items:
            ev, a = it.ev, it.accepted
            for col, value in zip(
                cols,
                (
                    ev.device_id,
                    ev.event_id,
                    ev.type,
                    ev.seq,
                    occurred_at(a),
                    a.received_at,
                    a.ingress.value,
                    a.gateway_id,
                    ev.battery,
                    orjson.dumps(ev.data).decode(),
                    it.partition,
                    it.offset,
                    a.clock_offset_s,
                ),
                strict=True,
            ):
                col.append(value)
        ids: dict[tuple[str, str], int] = {}
        devices: dict[str, Any] = {}
        for r in await conn.fetch(_RECORD_EVENTS, *cols):
            if r["row_kind"] == "event":
                ids[(r["device_id"], r["event_id"])] = r["id"]
            else:
                devices[r["device_id"]] = r
        new = []
        for it in items:
            row_id = ids.pop((it.ev.device_id, it.ev.event_id), None)  # a repeat in the batch: once
            if row_id is not None:
                it.row_id = row_id
                new.append(it)
        return new, devices

    # ------------------------------------------------------------ which take the fast path

    async def _plan(
        self, conn: asyncpg.Connection[Any], acting: list[_Item], devices: dict[str, Any], now: datetime
    ) -> tuple[list[_Open], list[_Item]]:
        candidates = [it for it in acting if type(it.ev).category in (Category.ALARM, Category.MAINTENANCE)]
        wanted = sorted({(devices[it.ev.device_id]["grid_code"], type(it.ev).priority) for it in candidates})
        open_pairs: set[tuple[str, str]] = set()
        found: dict[tuple[str, int], Any] = {}
        officers: dict[str, list[str]] = defaultdict(list)
        if candidates:
            rows = await conn.fetch(
                _PLAN_READS,
                [it.ev.device_id for it in candidates],
                [type(it.ev).category.value for it in candidates],
                [g for g, _ in wanted],
                [p for _, p in wanted],
                now,
            )
            for r in rows:
                if r["row_kind"] == "open":
                    open_pairs.add((r["a"], r["b"]))
                elif r["row_kind"] == "policy":
                    found[(r["a"], r["priority"])] = r
                else:
                    officers[r["a"]].append(r["b"])
        for on_shift in officers.values():
            on_shift.sort()
        policies = {(g, p): policy_from_row(p, found.get((g, p))) for g, p in wanted}
        alarm_keys = {
            correlation_key(devices[it.ev.device_id])
            for it in candidates
            if type(it.ev).category is Category.ALARM and (it.ev.device_id, "alarm") not in open_pairs
        }
        correlating = await self._correlation(conn, alarm_keys, devices, now)

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
                    occurred_at(o.item.accepted),
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
            await conn.execute(
                _EFFECTS,
                *zip(*[(t[0], t[1], t[2], t[3], t[4], orjson.dumps(t[5]).decode()) for t in timeline], strict=True),
                *(zip(*queued, strict=True) if queued else [[]] * 7),
                *zip(*outbox, strict=True),
                self.notify_notifiers,
            )
        return beaten

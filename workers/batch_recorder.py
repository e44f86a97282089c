"""A batch of accepted events recorded with a handful of set-based statements.

The escalation worker hands every batch it fetched from Kafka to `BatchRecorder.record`, inside
one transaction. The common case (a heartbeat; an alarm from a device with nothing open, where
no building is alarming and a grid officer is on shift) costs a few statements for the whole
batch instead of a dozen round trips per event:

1. every event row in one INSERT (idempotent by (device_id, event_id); ids in batch order), and
   every heartbeat in another, into its own narrow table (see migration 0016);
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
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from core.ids import new_incident_id
from core.incident_model import LEVELS, IncidentState, Policy, open_incident
from core.incident_service import (
    case_number_of,
    policy_from_row,
    receipt_outbox_row,
    update_outbox_row,
)
from schemas.events import AnyEvent, Category
from schemas.messages import AcceptedEvent, OfficerNotification
from workers.incident_store import (
    HandedNotification,
    IncidentStore,
    Outcome,
    correlation_key,
    occurred_at,
    open_reason,
)

# The batch's event rows (idempotent by (device_id, event_id); ids in batch order), its
# heartbeats in their own table (idempotent the same way; $16-$25), and, in the same statement,
# each device touched once by its new events and heartbeats: the latest time seen, and the
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
), beats AS (
    INSERT INTO device_heartbeats (device_id, event_id, seq, occurred_at, received_at, battery, ingress,
                                   gateway_id, clock_offset_s, data)
    SELECT h.device_id, h.event_id, h.seq, h.occurred_at, h.received_at, h.battery, h.ingress,
           h.gateway_id, h.clock_offset_s, h.data::jsonb
      FROM unnest($16::text[], $17::text[], $18::bigint[], $19::timestamptz[], $20::timestamptz[],
                  $21::int[], $22::text[], $23::text[], $24::float8[], $25::text[])
           AS h(device_id, event_id, seq, occurred_at, received_at, battery, ingress, gateway_id,
                clock_offset_s, data)
    ON CONFLICT (device_id, event_id) DO NOTHING
    RETURNING device_id, seq, received_at, battery
), latest AS (
    SELECT device_id, max(seq) AS seq, max(received_at) AS seen_at,
           (array_agg(battery ORDER BY seq DESC, id DESC) FILTER (WHERE battery IS NOT NULL))[1] AS battery
      FROM (SELECT id, device_id, seq, received_at, battery FROM ins
            UNION ALL
            SELECT 0, device_id, seq, received_at, battery FROM beats) n
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
    RETURNING d.device_id, d.grid_code, d.kind, d.address, d.building, d.resident_note
), locks AS (
    -- One correlator per building or grid cell at a time, across workers: the correlation keys
    -- of the devices that pressed an alarm ($14), locked in one order (no deadlock between two
    -- workers' batches), before the next statement counts what is open there.
    SELECT pg_advisory_xact_lock(h)
      FROM (SELECT DISTINCT hashtext('correlate:' || CASE WHEN coalesce(t.building, '') <> ''
                                                         THEN t.grid_code || '/' || t.building
                                                         ELSE t.grid_code END) AS h
              FROM touched t
             WHERE t.device_id = ANY($14::text[])
             ORDER BY 1) s
)
-- The event rows, and the devices that sent more than health ($15), for what follows; of the
-- heartbeats (most rows, at tens of thousands a second) only how many were new.
SELECT 'event' AS row_kind, id, device_id, event_id, NULL AS grid_code, NULL AS kind, NULL AS address,
       NULL AS building, NULL AS resident_note
  FROM ins
UNION ALL
SELECT 'device', NULL, device_id, NULL, grid_code, kind, address, building, resident_note
  FROM touched
 WHERE device_id = ANY($15::text[])
UNION ALL
SELECT 'health', count(*), NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM beats
UNION ALL
SELECT 'locked', count(*), NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM locks
"""

# What the plan of a batch needs, in one statement: the open incidents of the pressing devices
# (locked), the policy of each (grid cell, priority) as IncidentService's _POLICY finds it, the
# grid officers on shift of each grid cell as its _RESPONDERS finds them at level 0, per
# correlation key its open major incident and how many devices of it have an open, recent alarm
# incident of their own (see IncidentStore._correlate), and case numbers for the incidents the
# batch may open (one per pressing device and category with nothing open).
_PLAN_READS = """
WITH open AS (
    -- One lookup per pair in the one-open-per-device index, whatever the plan (LIMIT and FOR
    -- UPDATE keep each lateral a lookup of its own); the rows locked in incident_id order, as
    -- the notifier's record of sent pages locks them: locked in the batch's order, a batch whose
    -- devices pressed again deadlocked with it.
    SELECT i.device_id, i.category
      FROM (SELECT o.incident_id, c.device_id, c.category
              FROM (SELECT DISTINCT * FROM unnest($1::text[], $2::text[])) AS c(device_id, category)
             CROSS JOIN LATERAL (SELECT o.incident_id FROM incidents o
                                  WHERE o.device_id = c.device_id AND o.category = c.category
                                    AND o.closed_at IS NULL
                                  LIMIT 1) o
             ORDER BY o.incident_id) AS k
     CROSS JOIN LATERAL (SELECT i.device_id, i.category FROM incidents i
                          WHERE i.device_id = k.device_id AND i.category = k.category AND i.closed_at IS NULL
                            FOR UPDATE) i
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
      FROM (SELECT DISTINCT unnest($3::text[])) AS q(code)
      JOIN units g ON g.code = q.code
     CROSS JOIN LATERAL (SELECT o.officer_id FROM officers o
                          WHERE o.unit_code = g.path[array_length(g.path, 1)] AND o.active AND o.role <> 'admin'
                            AND EXISTS (SELECT 1 FROM duty_shifts s
                                         WHERE s.officer_id = o.officer_id AND s.during @> $5::timestamptz)) o
), recent AS MATERIALIZED (
    -- The open, recent single-device alarms of the batch's grid cells, read once for the batch
    -- (not once per key: a generic plan may read them through any index of open incidents), by
    -- a plain index scan (migration 0018). Counted per key below: one pass over them for all
    -- keys (a count per grid cell and per building, joined to the keys) cost a batch of one
    -- alarm 70-130 us more on a database of 1.5 million incidents, and at light load every
    -- batch is one alarm.
    SELECT r.device_id, r.grid_code FROM pingan_recent_alarms($7::text[], $9) AS r
), correlation AS (
    -- The building of a device is looked up only for a building's key.
    SELECT k.key,
           EXISTS (SELECT 1 FROM incidents m
                    WHERE m.is_major AND m.closed_at IS NULL AND m.correlation_key = k.key) AS has_major,
           (SELECT count(DISTINCT r.device_id)
              FROM recent r
             WHERE r.grid_code = k.grid_code
               AND CASE WHEN k.building = '' THEN true
                        ELSE EXISTS (SELECT 1 FROM devices d
                                      WHERE d.device_id = r.device_id AND d.building = k.building) END) AS devices
      FROM unnest($6::text[], $7::text[], $8::text[]) AS k(key, grid_code, building)
), cases AS (
    SELECT nextval('case_number_seq') AS n
      FROM generate_series(1, (SELECT count(DISTINCT (c.device_id, c.category))
                                 FROM unnest($1::text[], $2::text[]) AS c(device_id, category)
                                WHERE (c.device_id, c.category) NOT IN (SELECT * FROM open)))
)
SELECT 'open' AS row_kind, device_id AS a, category AS b, NULL::int AS priority, NULL::text AS unit_code,
       NULL::jsonb AS levels, NULL::int AS cancel_grace_s, NULL::bigint AS n
  FROM open
UNION ALL
SELECT 'policy', grid_code, NULL, priority, unit_code, levels, cancel_grace_s, NULL FROM policies
UNION ALL
SELECT 'officer', grid_code, officer_id, NULL, NULL, NULL, NULL, NULL FROM officers
UNION ALL
SELECT 'correlation', key, NULL, has_major::int, NULL, NULL, NULL, devices FROM correlation
UNION ALL
SELECT 'case', NULL, NULL, NULL, NULL, NULL, NULL, n FROM cases
"""


# The new incidents (their ids and case numbers chosen by the plan) with their timeline entries,
# notifications and outbox rows, and the wake-up of the relay, in one statement. An incident
# another transaction beat us to (its device has an open incident of the category now) is
# skipped with everything of it. Timeline and outbox rows keep the given order. Returned: the
# incidents inserted and their notifications. The notifications are handed to a notifier in this
# process when $38 is a lease (the other notifiers leave them alone until it runs out), else
# the notifiers are woken by NOTIFY to claim them.
_OPEN_MANY = """
WITH ins AS (
    INSERT INTO incidents (incident_id, case_number, category, status, priority, level, level_index,
                           device_id, grid_code, event_type, first_event_id, pressed_at, received_at,
                           opened_at, policy, awaiting, deadline_at, remind_at, due_at, is_major,
                           correlation_key)
    SELECT v.incident_id, v.case_number, v.category, v.status, v.priority, v.level, v.level_index,
           v.device_id, v.grid_code, v.event_type, v.event_id, v.pressed_at, v.received_at, v.opened_at,
           v.policy::jsonb, v.awaiting, v.deadline_at, v.remind_at, v.due_at, false, NULL
      FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::text[], $7::int[],
                  $8::text[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::timestamptz[],
                  $14::timestamptz[], $15::text[], $16::text[], $17::timestamptz[], $18::timestamptz[],
                  $19::timestamptz[])
           WITH ORDINALITY AS v(incident_id, case_number, category, status, priority, level, level_index,
                                device_id, grid_code, event_type, event_id, pressed_at, received_at,
                                opened_at, policy, awaiting, deadline_at, remind_at, due_at, ord)
     ORDER BY v.ord
    ON CONFLICT (device_id, category) WHERE closed_at IS NULL DO NOTHING
    RETURNING incident_id
), timeline AS (
    INSERT INTO incident_timeline (incident_id, at, kind, actor, event_row_id, detail)
    SELECT t.incident_id, t.at, t.kind, t.actor, t.event_row_id, t.detail::jsonb
      FROM unnest($20::uuid[], $21::timestamptz[], $22::text[], $23::text[], $24::bigint[], $25::text[])
           WITH ORDINALITY AS t(incident_id, at, kind, actor, event_row_id, detail, ord)
     WHERE t.incident_id IN (SELECT incident_id FROM ins)
     ORDER BY t.ord
), queued AS (
    INSERT INTO notifications (incident_id, officer_id, kind, level, reason, dedupe_key, incident_version,
                               next_attempt_at)
    SELECT q.*, clock_timestamp() + coalesce($38::interval, '0 s')
      FROM unnest($26::uuid[], $27::text[], $28::text[], $29::text[], $30::text[], $31::text[], $32::int[])
           AS q(incident_id, officer_id, kind, level, reason, dedupe_key, incident_version)
     WHERE q.incident_id IN (SELECT incident_id FROM ins)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id, incident_id, officer_id, created_at
), outbox AS (
    INSERT INTO outbox (destination, topic, key, payload)
    SELECT o.destination, o.topic, o.key, o.payload
      FROM unnest($33::uuid[], $34::text[], $35::text[], $36::text[], $37::bytea[])
           WITH ORDINALITY AS o(incident_id, destination, topic, key, payload, ord)
     WHERE o.incident_id IN (SELECT incident_id FROM ins)
     ORDER BY o.ord
)
SELECT incident_id, NULL::bigint AS id, NULL::text AS officer_id, NULL::timestamptz AS created_at FROM ins
UNION ALL
SELECT incident_id, id, officer_id, created_at FROM queued
UNION ALL
SELECT NULL, NULL, NULL, NULL
  FROM (SELECT pg_notify('pingan_outbox', ''),
               CASE WHEN $38::interval IS NULL THEN pg_notify('pingan_notifications', '') END) AS wake
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
        # None: NOTIFY the notifiers of the notifications the fast path queued. A lease: they
        # are handed to a notifier in this process after the commit (Outcome.handed), and the
        # other notifiers' claims leave them alone until the lease runs out.
        self.handover_lease: timedelta | None = None

    async def record(
        self, conn: asyncpg.Connection[Any], batch: list[tuple[AcceptedEvent, int | None, int | None]]
    ) -> Outcome:
        """Record (accepted event, Kafka partition, offset) items in the caller's transaction."""
        out = Outcome()
        items = [_Item(i, a, a.event, p, o) for i, (a, p, o) in enumerate(batch)]  # type: ignore[arg-type]
        new, devices, out.recorded = await self._record_events(conn, items)
        out.duplicates = len(items) - out.recorded
        acting = [it for it in new if it.ev.device_id in devices]
        if not acting:
            return out
        now = self.store.clock()
        fast, slow, cases = await self._plan(conn, acting, devices, now)
        if fast:
            skipped = await self._open_many(conn, fast, cases, now, out)
            slow.extend(skipped)
        for it in sorted(slow, key=lambda it: it.index):
            assert it.row_id is not None
            await self.store.take_effect(conn, it.accepted, it.row_id, devices[it.ev.device_id], out)
        return out

    # ------------------------------------------------------------ events and devices

    async def _record_events(
        self, conn: asyncpg.Connection[Any], items: list[_Item]
    ) -> tuple[list[_Item], dict[str, Any], int]:
        """Insert the event rows and the heartbeats, and touch their devices. Returns the new
        items other than heartbeats (in batch order), device_id -> device row (grid_code, kind,
        address, building) of the devices that sent them, and how many items were new in all."""
        # Column by column (a comprehension each: tens of thousands of heartbeats a second).
        acting_items = [it for it in items if type(it.ev).category is not Category.HEALTH]
        beats = [it for it in items if type(it.ev).category is Category.HEALTH]
        evs = [it.ev for it in acting_items]
        acc = [it.accepted for it in acting_items]
        cols: list[list[Any]] = [
            [ev.device_id for ev in evs],
            [ev.event_id for ev in evs],
            [ev.type for ev in evs],
            [ev.seq for ev in evs],
            [occurred_at(a) for a in acc],
            [a.received_at for a in acc],
            [a.ingress.value for a in acc],
            [a.gateway_id for a in acc],
            [ev.battery for ev in evs],
            [orjson.dumps(ev.data).decode() if ev.data else "{}" for ev in evs],
            [it.partition for it in acting_items],
            [it.offset for it in acting_items],
            [a.clock_offset_s for a in acc],
        ]
        hb = [it.ev for it in beats]
        hb_acc = [it.accepted for it in beats]
        beat_cols: list[list[Any]] = [
            [ev.device_id for ev in hb],
            [ev.event_id for ev in hb],
            [ev.seq for ev in hb],
            [occurred_at(a) for a in hb_acc],
            [a.received_at for a in hb_acc],
            [ev.battery for ev in hb],
            [a.ingress.value for a in hb_acc],
            [a.gateway_id for a in hb_acc],
            [a.clock_offset_s for a in hb_acc],
            [orjson.dumps(ev.data).decode() if ev.data else None for ev in hb],
        ]
        alarming = sorted({it.ev.device_id for it in items if type(it.ev).category is Category.ALARM})
        acting = sorted({it.ev.device_id for it in acting_items})
        ids: dict[tuple[str, str], int] = {}
        devices: dict[str, Any] = {}
        health_new = 0
        for r in await conn.fetch(_RECORD_EVENTS, *cols, alarming, acting, *beat_cols):
            kind = r["row_kind"]
            if kind == "event":
                ids[(r["device_id"], r["event_id"])] = r["id"]
            elif kind == "device":
                devices[r["device_id"]] = r
            elif kind == "health":
                health_new = r["id"]
        new = []
        for it in acting_items:
            row_id = ids.pop((it.ev.device_id, it.ev.event_id), None)  # a repeat in the batch: once
            if row_id is not None:
                it.row_id = row_id
                new.append(it)
        return new, devices, len(new) + health_new

    # ------------------------------------------------------------ which take the fast path

    async def _plan(
        self, conn: asyncpg.Connection[Any], acting: list[_Item], devices: dict[str, Any], now: datetime
    ) -> tuple[list[_Open], list[_Item], list[int]]:
        """Which items open an incident on the fast path (the rest take the per-event path), and
        the case numbers (sequence values) reserved for them."""
        candidates = [it for it in acting if type(it.ev).category in (Category.ALARM, Category.MAINTENANCE)]
        if not candidates:
            return [], list(acting), []
        wanted = sorted({(devices[it.ev.device_id]["grid_code"], type(it.ev).priority) for it in candidates})
        # Every alarm's correlation key (locked by _RECORD_EVENTS): those of devices with an open
        # alarm are counted too, and not used.
        grid_of: dict[str, tuple[str, str]] = {}
        for it in candidates:
            if type(it.ev).category is Category.ALARM:
                d = devices[it.ev.device_id]
                grid_of.setdefault(correlation_key(d), (d["grid_code"], d["building"] or ""))
        keys = sorted(grid_of)
        open_pairs: set[tuple[str, str]] = set()
        found: dict[tuple[str, int], Any] = {}
        officers: dict[str, list[str]] = defaultdict(list)
        correlating: dict[str, tuple[bool, int]] = {}
        cases: list[int] = []
        rows = await conn.fetch(
            _PLAN_READS,
            [it.ev.device_id for it in candidates],
            [type(it.ev).category.value for it in candidates],
            [g for g, _ in wanted],
            [p for _, p in wanted],
            now,
            keys,
            [grid_of[k][0] for k in keys],
            [grid_of[k][1] for k in keys],
            now - self.store.correlation.window,
        )
        for r in rows:
            kind = r["row_kind"]
            if kind == "open":
                open_pairs.add((r["a"], r["b"]))
            elif kind == "policy":
                found[(r["a"], r["priority"])] = r
            elif kind == "officer":
                officers[r["a"]].append(r["b"])
            elif kind == "correlation":
                correlating[r["a"]] = (bool(r["priority"]), r["n"])
            else:
                cases.append(r["n"])
        cases.sort()
        for on_shift in officers.values():
            on_shift.sort()
        policies = {(g, p): policy_from_row(p, found.get((g, p))) for g, p in wanted}

        threshold = self.store.correlation.threshold
        fast: list[_Open] = []
        slow: list[_Item] = []
        slow_devices: set[str] = set()
        seen: set[tuple[str, str]] = set()
        counted: set[tuple[str, str]] = set()  # (correlation key, device id) counted in the batch
        slow_keys: set[str] = set()  # the correlation keys of the alarms that take the per-event path
        for it in acting:
            ev = it.ev
            category = type(ev).category
            device = devices[ev.device_id]
            pair = (ev.device_id, category.value)
            go_slow = ev.device_id in slow_devices or category is Category.CANCEL or pair in open_pairs
            go_slow = go_slow or pair in seen  # a second press in the batch joins the first
            seen.add(pair)
            key = correlation_key(device)
            if category is Category.ALARM:
                # The slow items take effect after the fast ones: an alarm within the scope of an
                # earlier slow alarm's correlation (its building, or its whole grid cell) waits
                # for it, so that it is not counted before it was pressed.
                go_slow = go_slow or key in slow_keys or device["grid_code"] in slow_keys
            if category is Category.ALARM and pair not in open_pairs:
                has_major, count = correlating[key]
                go_slow = go_slow or has_major or count + 1 >= threshold
                # This alarm opens an incident either way (or joins the one its device opened
                # earlier in the batch): its device counts once for the alarms after it, in its
                # own key and in its grid cell's, which counts the alarms of the whole cell.
                for k in {key, device["grid_code"]} & correlating.keys():
                    if (k, ev.device_id) not in counted:
                        counted.add((k, ev.device_id))
                        k_major, k_count = correlating[k]
                        correlating[k] = (k_major, k_count + 1)
            policy = policies.get((device["grid_code"], ev.priority))
            if not go_slow and policy is not None:
                state = open_incident(policy, pressed_at=it.accepted.received_at, now=now)
                on_shift = officers.get(device["grid_code"], [])
                if state.level_index == 0 and on_shift:
                    fast.append(_Open(it, device, policy, state, on_shift, open_reason(ev, device)))
                    continue
            slow.append(it)
            slow_devices.add(ev.device_id)
            if category is Category.ALARM:
                slow_keys.add(key)
        return fast, slow, cases

    # ------------------------------------------------------------ the fast path's writes

    async def _open_many(
        self, conn: asyncpg.Connection[Any], fast: list[_Open], cases: list[int], now: datetime, out: Outcome
    ) -> list[_Item]:
        """Open one incident per planned item, with its timeline, notifications and outbox rows
        (what IncidentService.open does for one), in one statement. Returns the items another
        transaction beat us to (their device has an open incident now): they take the per-event
        path."""
        incidents: list[tuple[Any, ...]] = []
        timeline: list[tuple[Any, ...]] = []
        queued: list[tuple[Any, ...]] = []
        outbox: list[tuple[Any, ...]] = []
        if len(cases) < len(fast):  # the plan reserves one per device and category with nothing open
            raise RuntimeError(f"{len(fast)} incidents to open, {len(cases)} case numbers reserved")
        for o, n in zip(fast, cases, strict=False):
            ev, s = o.item.ev, o.state
            incident_id = new_incident_id()
            case_number = case_number_of(o.device["grid_code"], now, n)
            incidents.append(
                (
                    incident_id,
                    case_number,
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
                )
            )
            level = LEVELS[s.level_index]
            detail = {"event_id": ev.event_id, "type": ev.type, "priority": ev.priority, "level": s.level}
            timeline.append(
                (
                    incident_id,
                    now,
                    "opened",
                    f"device:{ev.device_id}",
                    o.item.row_id,
                    orjson.dumps(detail | {"policy": o.policy.source}).decode(),
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
                    orjson.dumps(
                        {"officers": o.officers, "kind": "incident_opened", "level": level, "reason": o.reason}
                    ).decode(),
                )
            )
            outbox.append(
                (
                    incident_id,
                    *receipt_outbox_row(
                        ev.device_id, ev.event_id, incident_id, case_number, "incident_opened", None, now
                    ),
                )
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
            outbox.append((incident_id, *update_outbox_row(self.store.topics, row, s, "opened", now)))
        rows = await conn.fetch(
            _OPEN_MANY,
            *_columns(incidents, 19),
            *_columns(timeline, 6),
            *_columns(queued, 7),
            *_columns(outbox, 5),
            self.handover_lease,
        )
        inserted = {r["incident_id"] for r in rows if r["incident_id"] is not None and r["id"] is None}
        beaten = []
        opened: dict[Any, tuple[_Open, tuple[Any, ...]]] = {}
        for o, inc in zip(fast, incidents, strict=True):
            if inc[0] in inserted:
                out.incidents_opened += 1
                out.incident_ids.append(str(inc[0]))
                opened[inc[0]] = (o, inc)
            else:
                beaten.append(o.item)
        if self.handover_lease is not None:
            for r in rows:
                if r["id"] is not None:
                    o, inc = opened[r["incident_id"]]
                    out.handed.append(_page(r, o, inc))
        return beaten


def _page(r: Any, o: _Open, inc: tuple[Any, ...]) -> HandedNotification:
    """The page of a notification queued with a new incident (what the notifier's claim would
    read of it)."""
    ev, device = o.item.ev, o.device
    return HandedNotification(
        r["id"],
        r["incident_id"],
        OfficerNotification(
            notification_id=r["id"],
            officer_id=r["officer_id"],
            incident_id=str(r["incident_id"]),
            case_number=inc[1],
            event_id=ev.event_id,
            kind="incident_opened",
            reason=o.reason,
            priority=ev.priority,
            event_type=ev.type,
            grid_code=device["grid_code"],
            pressed_at=inc[11].astimezone(UTC),
            created_at=r["created_at"],
            level=LEVELS[o.state.level_index],
            device_id=ev.device_id,
            device_kind=device["kind"],
            address=device["address"],
            resident_note=device["resident_note"] or None,
            status=o.state.status,
        ),
    )


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as `width` column lists (the arrays an unnest takes)."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]

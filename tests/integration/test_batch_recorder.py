"""The worker's batch path does exactly what recording the same events one by one does.

Each generated batch (alarms, repeats, cancels, maintenance, heartbeats, an exact repeat of an
event, a building that starts alarming, a grid cell with nobody on shift, an incident already
open before the batch) is recorded twice against the real Postgres, each time in a transaction
that is rolled back: once through `IncidentStore.record` event by event, once through
`BatchRecorder.record`. What each leaves behind (events, devices, incidents, timelines,
notifications, outbox rows in the order each device and each incident sees them) must be the
same.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core import kafka
from core.incident_service import _CASE_NUMBER, case_number_of
from core.timeutil import utcnow
from schemas.events import event_class
from schemas.messages import AcceptedEvent, Ingress
from workers.batch_recorder import BatchRecorder
from workers.incident_store import Correlation, IncidentStore

pytestmark = pytest.mark.stack

GRID_BUILDING = "990103001002001"  # six devices in one building (a burst correlates), and two more
GRID_OPEN = "990103001002002"  # one device outside any building
GRID_NOBODY = "990103001002003"  # nobody on shift: escalates at once
DEVICES = [(f"br-{i}", GRID_BUILDING, "7号楼") for i in range(6)] + [
    ("br-6", GRID_OPEN, ""),
    ("br-7", GRID_NOBODY, ""),
    # In the building's grid cell: one in another building, one outside any (the grid cell's
    # key counts the alarms of the whole cell, a building's key those of its building).
    ("br-8", GRID_BUILDING, "8号楼"),
    ("br-9", GRID_BUILDING, ""),
]
TYPES = ["alarm.panic", "alarm.fall", "alarm.intrusion", "alarm.cancel", "device.fault", "device.heartbeat"]


class FixedClock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> Any:
        return self.now


@pytest.fixture(scope="module")
async def devices(env) -> list[str]:  # type: ignore[no-untyped-def]
    await env.pool.executemany(
        "INSERT INTO devices (device_id, grid_code, kind, address, building) VALUES ($1, $2, 'panic_button', $3, $4) "
        "ON CONFLICT DO NOTHING",
        [(d, g, f"测试 {d}", b) for d, g, b in DEVICES],
    )
    return [d for d, _, _ in DEVICES]


def make_batch(steps: list[tuple[int, int, bool]], clock: FixedClock) -> list[AcceptedEvent]:
    """(device index, type index, repeat the previous event exactly) -> accepted events."""
    out: list[AcceptedEvent] = []
    seq = dict.fromkeys(range(len(DEVICES)), 0)
    for i, (d, t, again) in enumerate(steps):
        if again and out:
            out.append(out[-1])
            continue
        seq[d] += 1
        cls = event_class(TYPES[t])
        assert cls is not None
        at = clock.now - timedelta(seconds=len(steps) - i)
        skewed = i % 5 == 4  # a device clock far off: flagged by the gateway, recorded at receipt time
        ev = cls(
            event_id=f"e{i}-{uuid.uuid4().hex[:8]}",
            device_id=DEVICES[d][0],
            occurred_at=at - timedelta(days=3) if skewed else at,
            seq=seq[d],
            battery=None if i % 3 == 2 else 90 - i,
            data={"rssi": -60 - i} if i % 4 == 1 else {},
        )
        out.append(
            AcceptedEvent(
                event=ev,  # type: ignore[arg-type]
                received_at=at,
                ingress=Ingress.MQTT,
                gateway_id="test",
                clock_offset_s=-86400.0 * 3 if skewed else None,
            )
        )
    return out


async def snapshot(conn: Any, device_ids: list[str], outbox_from: int) -> dict[str, Any]:
    incidents = await conn.fetch(
        "SELECT incident_id, device_id, category, status, level, level_index, priority, event_count, is_major, "
        "major_id, first_event_id, awaiting, deadline_at, remind_at, correlation_key, policy, pressed_at, case_number "
        "FROM incidents WHERE device_id = ANY($1) OR correlation_key IS NOT NULL ORDER BY first_event_id, is_major",
        device_ids,
    )
    # Incidents are named by their first event (uuids and case numbers differ between runs).
    name = {r["incident_id"]: f"{r['first_event_id']}{'/major' if r['is_major'] else ''}" for r in incidents}
    # A case number is the district, the day and a sequence number: the same but for the number.
    case_of = {r["case_number"]: f"{r['case_number'][:16]}n of {name[r['incident_id']]}" for r in incidents}

    def named(v: Any) -> Any:
        if isinstance(v, str):
            for iid, n in name.items():
                v = v.replace(str(iid), n)
        return v

    def js(v: Any) -> str:
        return str(named(orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()))

    ids = list(name)
    timeline = await conn.fetch(
        "SELECT incident_id, kind, actor, detail, event_row_id IS NOT NULL AS has_event "
        "FROM incident_timeline WHERE incident_id = ANY($1) ORDER BY id",
        ids,
    )
    notes = await conn.fetch(
        "SELECT incident_id, officer_id, kind, level, reason, dedupe_key FROM notifications "
        "WHERE incident_id = ANY($1)",
        ids,
    )
    outbox = await conn.fetch("SELECT topic, key, payload FROM outbox WHERE id > $1 ORDER BY id", outbox_from)
    per_stream: dict[str, list[str]] = {}  # what each device and each incident's watchers see, in order
    for r in outbox:
        payload = orjson.loads(r["payload"])
        if "case_number" in payload:  # the incident's own, or it stays as it is (and differs)
            payload["case_number"] = case_of.get(payload["case_number"], payload["case_number"])
        per_stream.setdefault(named(r["key"] or r["topic"]), []).append(js(payload))
    events = await conn.fetch(
        "SELECT device_id, event_id, seq, battery, occurred_at, clock_offset_s FROM events WHERE device_id = ANY($1) "
        "ORDER BY id",
        device_ids,
    )
    beats = await conn.fetch(
        "SELECT device_id, event_id, seq, battery, occurred_at, received_at, ingress, gateway_id, clock_offset_s, data "
        "FROM device_heartbeats WHERE device_id = ANY($1) ORDER BY device_id, event_id",
        device_ids,
    )
    devs = await conn.fetch(
        "SELECT device_id, last_seq, battery, online, last_seen_at FROM devices WHERE device_id = ANY($1) "
        "ORDER BY device_id",
        device_ids,
    )
    return {
        "events": [tuple(r) for r in events],
        "heartbeats": [tuple(r) for r in beats],
        "devices": [tuple(r) for r in devs],
        "incidents": [
            (
                name[r["incident_id"]],
                name.get(r["major_id"]),
                case_of[r["case_number"]],
                *(
                    js(r[k]) if k == "policy" else r[k]
                    for k in r.keys()
                    if k not in ("incident_id", "major_id", "case_number")
                ),
            )
            for r in incidents
        ],
        "timeline": {
            name[iid]: [
                (r["kind"], r["actor"], js(r["detail"]), r["has_event"]) for r in timeline if r["incident_id"] == iid
            ]
            for iid in ids
        },
        "notifications": sorted(
            (name[r["incident_id"]], r["officer_id"], r["kind"], r["level"], r["reason"], named(r["dedupe_key"]))
            for r in notes
        ),
        "outbox": per_stream,
    }


class Rollback(Exception):
    pass


async def record(conn: Any, store: IncidentStore, batch: list[AcceptedEvent], batched: bool) -> int | None:
    """Record `batch` by the worker's batch path or event by event (partition 0, offsets in
    order). Returns how many were new by the batch path; None event by event."""
    if batched:
        out = await BatchRecorder(store).record(conn, [(a, 0, i) for i, a in enumerate(batch)])
        return out.recorded
    for i, a in enumerate(batch):
        await store.record(conn, a, partition=0, offset=i)
    return None


async def run(
    env: Any,
    clock: FixedClock,
    device_ids: list[str],
    before: list[AcceptedEvent],
    batch: list[AcceptedEvent],
    batched: bool,
) -> dict[str, Any]:
    store = IncidentStore(kafka.topics(env.settings), clock=clock, correlation=Correlation(threshold=4))
    result: dict[str, Any] = {}
    async with env.pool.acquire() as conn:
        try:
            async with conn.transaction():
                await conn.execute(
                    "DELETE FROM duty_shifts WHERE officer_id IN "
                    "(SELECT officer_id FROM officers WHERE unit_code = $1)",
                    GRID_NOBODY,
                )
                outbox_from = await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox")
                for a in before:
                    await store.record(conn, a)
                recorded = await record(conn, store, batch, batched)
                result = await snapshot(conn, device_ids, outbox_from)
                if batched:
                    result["recorded"] = recorded
                raise Rollback
        except Rollback:
            pass
    return result


steps = st.lists(
    st.tuples(st.integers(0, len(DEVICES) - 1), st.integers(0, len(TYPES) - 1), st.sampled_from([False] * 5 + [True])),
    min_size=1,
    max_size=24,
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=steps, open_before=st.booleans())
# Three alarms in a building, then one outside any building in the same grid cell: the cell's
# key counts the building's alarms too (a batch that counted them only for the building's key
# left the fourth alarm out of the cell's major incident).
@example(steps=[(0, 0, False), (1, 0, False), (2, 0, False), (9, 0, False)], open_before=False)
# The fourth alarm forms the grid cell's major incident on the per-event path; the fifth, in
# another building of the cell, waits for it (opened ahead of it, it became a member).
@example(steps=[(0, 0, False), (1, 0, False), (2, 0, False), (9, 0, False), (8, 0, False)], open_before=False)
# A device that presses twice in the batch counts once.
@example(steps=[(0, 0, False), (0, 1, False), (1, 0, False), (2, 0, False)], open_before=False)
@example(steps=[(0, 0, False), (0, 1, False), (1, 0, False), (9, 0, False)], open_before=False)
async def test_batch_path_equals_event_by_event(
    env, devices, steps: list[tuple[int, int, bool]], open_before: bool
) -> None:  # type: ignore[no-untyped-def]
    clock = FixedClock()
    before = make_batch([(0, 0, False)], clock) if open_before else []
    batch = make_batch(steps, clock)
    one_by_one = await run(env, clock, devices, before, batch, batched=False)
    batched = await run(env, clock, devices, before, batch, batched=True)
    recorded = batched.pop("recorded")
    assert recorded == len({(a.event.device_id, a.event.event_id) for a in batch})  # type: ignore[attr-defined]
    for part in one_by_one:
        assert batched[part] == one_by_one[part], part


@pytest.mark.parametrize("n", [1, 42, 999999, 1000000, 12345678, 9223372036854775807])
@pytest.mark.parametrize("at", ["2026-11-27T23:59:59+00:00", "2026-11-28T07:30:00+08:00", "2026-01-01T00:00:00Z"])
async def test_case_number_of_is_the_one_postgres_makes(env, n: int, at: str) -> None:  # type: ignore[no-untyped-def]
    opened = datetime.fromisoformat(at)
    # The expression the per-event path inserts, with the sequence value given.
    expr = _CASE_NUMBER.replace("nextval('case_number_seq')", "$3::bigint").format(
        grid="$1::text", opened="$2::timestamptz"
    )
    made = await env.pool.fetchval(
        f"SELECT {expr}",
        GRID_OPEN,
        opened,
        n,
    )
    assert case_number_of(GRID_OPEN, opened, n) == made
    assert made.rsplit("-", 1)[1].lstrip("0") == str(n)  # every digit of the sequence, none cut


@contextlib.asynccontextmanager
async def rolled_back(conn: Any) -> AsyncIterator[None]:
    """A transaction rolled back at the end, and the case number sequence put back where it
    was (sequences ignore rollbacks)."""
    before = await conn.fetchval("SELECT last_value FROM case_number_seq")
    try:
        async with conn.transaction():
            yield
            raise Rollback
    except Rollback:
        pass
    finally:
        await conn.execute("SELECT setval('case_number_seq', $1)", before)


@pytest.mark.parametrize("batched", [False, True], ids=["event by event", "batch"])
async def test_incidents_open_past_the_millionth_case_number(env, devices, batched: bool) -> None:  # type: ignore[no-untyped-def]
    """The case number sequence never restarts: past 999,999 every alarm still opens its
    incident, with every digit of its number (a number cut to six digits repeats one before)."""
    clock = FixedClock()
    batch = make_batch([(6, 0, False), (7, 0, False), (0, 0, False), (1, 0, False)], clock)
    store = IncidentStore(kafka.topics(env.settings), clock=clock, correlation=Correlation(threshold=4))
    async with env.pool.acquire() as conn, rolled_back(conn):
        await conn.execute("SELECT setval('case_number_seq', 999998)")
        recorded = await record(conn, store, batch, batched)
        assert recorded == (4 if batched else None)
        numbers = await conn.fetch(
            "SELECT device_id, case_number FROM incidents WHERE first_event_id = ANY($1::text[]) ORDER BY case_number",
            [a.event.event_id for a in batch],  # type: ignore[attr-defined]
        )
    assert sorted(r["device_id"] for r in numbers) == sorted({a.event.device_id for a in batch})  # type: ignore[attr-defined]
    assert sorted(int(r["case_number"].rsplit("-", 1)[1]) for r in numbers) == [999999, 1000000, 1000001, 1000002]


async def test_a_case_number_given_twice_is_an_error_not_a_race(env, devices) -> None:  # type: ignore[no-untyped-def]
    """Only the race of two workers opening the same device's incident is skipped quietly; a
    case number the sequence gives again (a database restored without its sequence) is an
    error with its constraint's name, not taken for that race."""
    clock = FixedClock()
    first, second = make_batch([(6, 0, False), (7, 0, False)], clock)
    store = IncidentStore(kafka.topics(env.settings), clock=clock, correlation=Correlation(threshold=4))
    async with env.pool.acquire() as conn, rolled_back(conn):
        n = await conn.fetchval("SELECT last_value FROM case_number_seq")
        await store.record(conn, first, partition=0, offset=0)
        await conn.execute("SELECT setval('case_number_seq', $1)", n)  # gives the same number again
        with pytest.raises(asyncpg.UniqueViolationError) as raised:
            await store.record(conn, second, partition=0, offset=1)
        assert raised.value.constraint_name == "incidents_case_number_key"


@pytest.mark.parametrize("batched", [False, True], ids=["event by event", "batch"])
async def test_incidents_get_time_ordered_ids(env, devices, batched: bool) -> None:  # type: ignore[no-untyped-def]
    """Both ways of opening an incident give it a version 7 id (core/ids.py for the batch, the
    database's default, migration 0017, for one at a time): random ids put each new incident
    on a page of its own in every index the id leads."""
    clock = FixedClock()
    batch = make_batch([(6, 0, False), (7, 0, False), (0, 0, False)], clock)
    store = IncidentStore(kafka.topics(env.settings), clock=clock, correlation=Correlation(threshold=4))
    async with env.pool.acquire() as conn, rolled_back(conn):
        await record(conn, store, batch, batched)
        ids = await conn.fetchval(
            "SELECT array_agg(incident_id) FROM incidents WHERE first_event_id = ANY($1::text[])",
            [a.event.event_id for a in batch],  # type: ignore[attr-defined]
        )
    assert len(ids) == 3
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids), ids

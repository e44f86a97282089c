"""Escalation and the incident lifecycle against the real Postgres, with a controllable clock."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from core.incident_model import Acknowledge, IllegalAction, Resolve
from core.incident_service import IncidentService
from core.timeutil import utcnow
from schemas.events import event_class
from schemas.messages import AcceptedEvent, Ingress
from workers.escalation_timer import EscalationTimer
from workers.incident_store import Correlation, IncidentStore

pytestmark = pytest.mark.stack

GRID = "990103001002001"
COMMUNITY = GRID[:12]
STREET = GRID[:9]
DISTRICT = GRID[:6]
CITY = "990100"


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> Any:
        return self.now


def accepted(device_id: str, type_: str, at: Any, **data: Any) -> AcceptedEvent:
    cls = event_class(type_)
    assert cls is not None
    ev = cls(event_id=f"e-{uuid.uuid4().hex}", device_id=device_id, occurred_at=at, seq=1, data=data)
    return AcceptedEvent(event=ev, received_at=at, ingress=Ingress.MQTT, gateway_id="test")  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(env, clock):  # type: ignore[no-untyped-def]
    from core import kafka

    # Correlation off: these tests press many devices of one grid cell on purpose.
    return IncidentStore(kafka.topics(env.settings), clock=clock, correlation=Correlation(threshold=10**6))


@pytest.fixture
def timer(env):  # type: ignore[no-untyped-def]
    return EscalationTimer(env.settings, env.pool)


async def press(env, store, clock, device_id: str, type_: str = "alarm.panic") -> Any:  # type: ignore[no-untyped-def]
    async with env.pool.acquire() as conn, conn.transaction():
        out = await store.record(conn, accepted(device_id, type_, clock.now))
    assert out.recorded == 1
    return out.incident_ids[0] if out.incident_ids else None


async def incident(env, incident_id: Any) -> Any:  # type: ignore[no-untyped-def]
    return await env.pool.fetchrow("SELECT * FROM incidents WHERE incident_id = $1::uuid", incident_id)


async def notified(env, incident_id: Any, kind: str | None = None) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    rows = await env.pool.fetch(
        "SELECT officer_id, kind, reason FROM notifications WHERE incident_id = $1::uuid "
        "AND ($2::text IS NULL OR kind = $2) ORDER BY id",
        incident_id,
        kind,
    )
    return [(r["officer_id"], r["kind"], r["reason"]) for r in rows]


async def test_unacknowledged_p1_climbs_every_level_at_its_deadline(env, store, timer, clock) -> None:
    dev = await env.add_device(GRID)
    t0 = clock.now
    iid = await press(env, store, clock, dev.device_id)
    assert [o for o, _, _ in await notified(env, iid, "incident_opened")] == [f"go-{GRID}"]

    assert await timer.step(t0 + timedelta(seconds=19)) == 0
    await timer.step(t0 + timedelta(seconds=20))
    assert [o for o, _, _ in await notified(env, iid, "reminder")] == [f"go-{GRID}"]

    expected = [
        (60, "community", COMMUNITY, "not acknowledged by the grid officer within 60 s"),
        (120, "street", STREET, "not acknowledged by the community centre within 60 s"),
        (210, "district", DISTRICT, "not acknowledged by the street centre within 90 s"),
        (330, "city", CITY, "not acknowledged by the district centre within 120 s"),
    ]
    for at, level, unit, reason in expected:
        row = await incident(env, iid)
        before = row["level"]
        await timer.step(t0 + timedelta(seconds=at - 1))  # a reminder may go out, no escalation
        assert (await incident(env, iid))["level"] == before
        await timer.step(t0 + timedelta(seconds=at))
        row = await incident(env, iid)
        assert row["level"] == level, f"at {at} s"
        assert row["due_at"] > t0 + timedelta(seconds=at)
        escalated = [(o, r) for o, k, r in await notified(env, iid, "escalated") if o.startswith(f"do-{unit}-")]
        assert sorted(o for o, _ in escalated) == [f"do-{unit}-1", f"do-{unit}-2"]
        assert {r for _, r in escalated} == {reason}
    # Those escalated past were told the incident moved on.
    moved = {o for o, _, _ in await notified(env, iid, "moved_on")}
    assert f"go-{GRID}" in moved and f"do-{COMMUNITY}-1" in moved
    kinds = [
        r["kind"]
        for r in await env.pool.fetch(
            "SELECT kind FROM incident_timeline WHERE incident_id = $1::uuid ORDER BY id", iid
        )
    ]
    assert kinds.count("escalated") == 4
    # At the top the city keeps being paged: escalation never stalls.
    await timer.step(t0 + timedelta(seconds=330 + 120))
    row = await incident(env, iid)
    assert row["level"] == "city" and row["due_at"] is not None


async def test_acknowledgement_without_arrival_resumes_escalation(env, store, timer, clock) -> None:
    dev = await env.add_device(GRID)
    t0 = clock.now
    iid = await press(env, store, clock, dev.device_id)
    service = IncidentService(store.topics)
    async with env.pool.acquire() as conn, conn.transaction():
        await service.perform(
            conn, iid, Acknowledge(f"go-{GRID}", 0), t0 + timedelta(seconds=30), change="acknowledged"
        )
    row = await incident(env, iid)
    assert row["status"] == "acknowledged" and row["awaiting"] == "arrival"
    assert row["acknowledged_by"] == f"go-{GRID}" and row["ack_level"] == "grid"

    await timer.step(t0 + timedelta(seconds=629))
    assert (await incident(env, iid))["level"] == "grid"
    await timer.step(t0 + timedelta(seconds=630))
    row = await incident(env, iid)
    assert row["level"] == "community" and row["awaiting"] == "ack"
    reasons = {r for _, _, r in await notified(env, iid, "escalated")}
    assert reasons == {"nobody reported on scene within 600 s of the acknowledgement"}
    receipts = await env.pool.fetch(
        "SELECT convert_from(payload, 'UTF8')::jsonb ->> 'status' AS s FROM outbox WHERE topic = $1 ORDER BY id",
        f"pingan/v1/devices/{dev.device_id}/receipts",
    )
    assert [r["s"] for r in receipts] == ["incident_opened", "acknowledged"]


async def test_cancel_within_grace_closes_and_tells_who_was_notified(env, store, clock) -> None:
    dev = await env.add_device(GRID)
    t0 = clock.now
    iid = await press(env, store, clock, dev.device_id)
    clock.now = t0 + timedelta(seconds=30)
    await press(env, store, clock, dev.device_id, "alarm.cancel")
    row = await incident(env, iid)
    assert row["status"] == "cancelled" and row["outcome"] == "cancelled" and row["due_at"] is None
    assert [o for o, _, _ in await notified(env, iid, "cancelled")] == [f"go-{GRID}"]


async def test_cancel_after_grace_is_refused_and_the_alarm_stands(env, store, clock) -> None:
    dev = await env.add_device(GRID)
    t0 = clock.now
    iid = await press(env, store, clock, dev.device_id)
    clock.now = t0 + timedelta(seconds=121)
    async with env.pool.acquire() as conn, conn.transaction():
        await store.record(conn, accepted(dev.device_id, "alarm.cancel", clock.now))
    row = await incident(env, iid)
    assert row["status"] == "opened" and row["closed_at"] is None
    refused = await notified(env, iid, "cancel_refused")
    assert [o for o, _, _ in refused] == [f"go-{GRID}"]
    assert "120 s" in refused[0][2]
    statuses = [
        r["s"]
        for r in await env.pool.fetch(
            "SELECT convert_from(payload, 'UTF8')::jsonb ->> 'status' AS s FROM outbox WHERE topic = $1 ORDER BY id",
            f"pingan/v1/devices/{dev.device_id}/receipts",
        )
    ]
    assert statuses[-1] == "cancel_refused"


async def test_burst_in_one_building_forms_one_major_incident(env, timer, clock) -> None:
    from core import kafka

    store = IncidentStore(kafka.topics(env.settings), clock=clock, correlation=Correlation(threshold=4))
    grid = "990104002001002"
    devices = [await env.add_device(grid) for _ in range(7)]
    await env.pool.execute(
        "UPDATE devices SET building = 'B7' WHERE device_id = ANY($1::text[])", [d.device_id for d in devices]
    )
    t0 = clock.now
    for i, d in enumerate(devices):
        clock.now = t0 + timedelta(seconds=2 * i)
        await press(env, store, clock, d.device_id, "alarm.fire")
    majors = await env.pool.fetch("SELECT * FROM incidents WHERE is_major AND grid_code = $1", grid)
    assert len(majors) == 1
    major = majors[0]
    assert major["level"] == "community" and major["correlation_key"] == f"{grid}/B7"
    members = await env.pool.fetch("SELECT * FROM incidents WHERE major_id = $1", major["incident_id"])
    assert {m["device_id"] for m in members} == {d.device_id for d in devices}
    assert all(m["due_at"] is None for m in members)  # the major's clock runs, not theirs
    paged = await notified(env, str(major["incident_id"]), "major_incident")
    assert sorted(o for o, _, _ in paged) == [f"do-{grid[:12]}-1", f"do-{grid[:12]}-2"]
    # The grid officer was paged for the first three alarms only, not for all seven.
    grid_pages = await env.pool.fetchval(
        "SELECT count(*) FROM notifications n JOIN incidents i USING (incident_id) "
        "WHERE i.grid_code = $1 AND n.officer_id = $2 AND n.kind = 'incident_opened'",
        grid,
        f"go-{grid}",
    )
    assert grid_pages == 3
    # Resolving the major incident closes every member.
    service = IncidentService(store.topics)
    async with env.pool.acquire() as conn, conn.transaction():
        await service.perform(
            conn,
            major["incident_id"],
            Resolve(f"do-{grid[:12]}-1", "referred", "119"),
            clock.now,
            change="closed",
        )
    still_open = await env.pool.fetchval(
        "SELECT count(*) FROM incidents WHERE (major_id = $1 OR incident_id = $1) AND closed_at IS NULL",
        major["incident_id"],
    )
    assert still_open == 0
    assert {
        m["referral"]
        for m in await env.pool.fetch("SELECT referral FROM incidents WHERE major_id = $1", major["incident_id"])
    } == {"119"}


async def test_two_timers_at_once_never_escalate_an_incident_twice(env, store, clock) -> None:
    devices = [await env.add_device(GRID) for _ in range(40)]
    t0 = clock.now
    ids = [await press(env, store, clock, d.device_id) for d in devices]
    a = EscalationTimer(env.settings, env.pool, batch=7)
    b = EscalationTimer(env.settings, env.pool, batch=7)

    async def drain(t: EscalationTimer) -> int:
        n = 0
        while (k := await t.step(t0 + timedelta(seconds=60))) > 0:
            n += k
        return n

    done_a, done_b = await asyncio.gather(drain(a), drain(b))
    assert done_a + done_b >= len(ids)  # (other tests' incidents of this module may be due too)
    assert done_a > 0 and done_b > 0
    counts = await env.pool.fetch(
        "SELECT incident_id, count(*) FILTER (WHERE kind = 'escalated') AS n FROM incident_timeline "
        "WHERE incident_id = ANY($1::uuid[]) GROUP BY incident_id",
        ids,
    )
    assert sorted(r["n"] for r in counts) == [1] * len(ids)


async def test_a_timer_killed_mid_step_leaves_the_step_to_the_other(env, store, clock) -> None:
    devices = [await env.add_device(GRID) for _ in range(5)]
    t0 = clock.now
    ids = [await press(env, store, clock, d.device_id) for d in devices]
    victim = EscalationTimer(env.settings, env.pool, batch=10)
    stuck = asyncio.Event()
    pid: list[int] = []
    original = victim.service.perform

    async def perform_then_hang(conn, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = await original(conn, *args, **kwargs)
        pid.append(conn.get_server_pid())
        stuck.set()
        await asyncio.Event().wait()  # dies here, mid-step, holding the claimed rows
        return result

    victim.service.perform = perform_then_hang  # type: ignore[method-assign]
    task = asyncio.create_task(victim.step(t0 + timedelta(seconds=60)))
    await asyncio.wait_for(stuck.wait(), 10)
    # While it holds the rows, another timer skips them rather than escalating twice.
    other = EscalationTimer(env.settings, env.pool)
    await other.step(t0 + timedelta(seconds=60))
    levels = {
        r["level"] for r in await env.pool.fetch("SELECT level FROM incidents WHERE incident_id = ANY($1::uuid[])", ids)
    }
    assert levels == {"grid"}
    # The victim's connection dies (as with SIGKILL of its process).
    await env.pool.execute("SELECT pg_terminate_backend($1)", pid[0])
    with pytest.raises(Exception):  # noqa: B017 - whatever the dead connection raises
        await asyncio.wait_for(task, 10)
    assert await other.step(t0 + timedelta(seconds=60)) >= len(ids)
    levels = {
        r["level"] for r in await env.pool.fetch("SELECT level FROM incidents WHERE incident_id = ANY($1::uuid[])", ids)
    }
    assert levels == {"community"}
    escalations = await env.pool.fetchval(
        "SELECT count(*) FROM incident_timeline WHERE incident_id = ANY($1::uuid[]) AND kind = 'escalated'",
        ids,
    )
    assert escalations == len(ids)


async def test_a_unit_with_nobody_on_shift_escalates_at_once(env, store, clock) -> None:
    grid = "990102002002003"
    await env.pool.execute(
        "UPDATE duty_shifts SET during = tstzrange(now() - interval '2 days', now() - interval '1 day') "
        "WHERE officer_id = $1",
        f"go-{grid}",
    )
    dev = await env.add_device(grid)
    iid = await press(env, store, clock, dev.device_id)
    row = await incident(env, iid)
    assert row["level"] == "community"
    pages = await notified(env, iid)
    assert all(o.startswith(f"do-{grid[:12]}-") for o, _, _ in pages)
    assert {r for _, _, r in pages} == {"nobody on duty at the grid officer"}


async def test_unit_policy_is_inherited_and_frozen_on_the_incident(env, store, timer, clock) -> None:
    grid = "990104001001001"
    await env.pool.execute(
        "INSERT INTO escalation_policies (unit_code, priority, levels, cancel_grace_s) VALUES ($1, 1, $2, 30)",
        grid[:6],
        [
            {"level": "grid", "ack_s": 15, "arrive_s": 300, "remind_s": None},
            {"level": "community", "ack_s": 15, "arrive_s": 300, "remind_s": None},
        ],
    )
    dev = await env.add_device(grid)
    t0 = clock.now
    iid = await press(env, store, clock, dev.device_id)
    row = await incident(env, iid)
    assert row["policy"]["source"] == grid[:6]
    assert row["deadline_at"] == t0 + timedelta(seconds=15)
    # A later edit of the policy does not change an incident already escalating.
    await env.pool.execute(
        "UPDATE escalation_policies SET levels = $2 WHERE unit_code = $1",
        grid[:6],
        [{"level": "grid", "ack_s": 999, "arrive_s": 999, "remind_s": None}],
    )
    await timer.step(t0 + timedelta(seconds=15))
    row = await incident(env, iid)
    assert row["level"] == "community" and row["deadline_at"] == t0 + timedelta(seconds=30)
    await timer.step(t0 + timedelta(seconds=30))  # the top of this policy: paged again, not beyond
    assert (await incident(env, iid))["level"] == "community"


async def test_an_action_the_state_forbids_is_refused_and_changes_nothing(env, store, clock) -> None:
    dev = await env.add_device(GRID)
    iid = await press(env, store, clock, dev.device_id)
    service = IncidentService(store.topics)
    async with env.pool.acquire() as conn, conn.transaction():
        await service.perform(conn, iid, Resolve(f"go-{GRID}", "false_alarm"), clock.now, change="closed")
    before = await incident(env, iid)
    with pytest.raises(IllegalAction) as err:
        async with env.pool.acquire() as conn, conn.transaction():
            await service.perform(conn, iid, Acknowledge(f"go-{GRID}", 0), clock.now, change="acknowledged")
    assert err.value.code == "incident_closed"
    assert await incident(env, iid) == before


async def test_incident_without_a_frozen_policy_follows_the_default(env, store, timer, clock) -> None:
    """Incidents opened before policies existed (empty policy, no deadline) escalate too."""
    dev = await env.add_device(GRID)
    iid = await press(env, store, clock, dev.device_id)
    await env.pool.execute(
        "UPDATE incidents SET policy = '{}'::jsonb, deadline_at = opened_at + interval '60 seconds', "
        "remind_at = NULL, due_at = opened_at + interval '60 seconds' WHERE incident_id = $1::uuid",
        iid,
    )
    await timer.step(clock.now + timedelta(seconds=60))
    row = await incident(env, iid)
    assert row["level"] == "community" and row["due_at"] is not None

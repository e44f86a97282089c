"""The benchmark splits an alarm's latency into stages from the times the system records."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from bench.run import last_event_id
from bench.stages import STAGES, alarm_stages, stages_line

pytestmark = pytest.mark.stack


async def _alarm(conn, tag: str, i: int, t0: datetime, *, paged: bool = True) -> None:  # type: ignore[no-untyped-def]
    """An alarm pressed at t0, at the gateway 1 ms later, its row 2 ms later, its first page
    queued 3 ms later and acknowledged by the broker 4 ms later (+ i ms on each stage)."""
    ms = timedelta(milliseconds=1)
    device = await conn.fetchval("SELECT device_id FROM devices ORDER BY device_id LIMIT 1 OFFSET $1", i)
    grid = await conn.fetchval("SELECT grid_code FROM devices WHERE device_id = $1", device)
    event_id = f"{tag}-{i}"
    recorded = t0 + (1 + i) * ms + (2 + i) * ms
    await conn.execute(
        "INSERT INTO events (device_id, event_id, type, seq, occurred_at, received_at, recorded_at, ingress, "
        "gateway_id) VALUES ($1, $2, 'alarm.panic', 1, $3, $4, $5, 'mqtt', 'test')",
        device,
        event_id,
        t0,
        t0 + (1 + i) * ms,
        recorded,
    )
    incident = uuid.uuid4()
    await conn.execute(
        "INSERT INTO incidents (incident_id, case_number, category, status, priority, device_id, grid_code, "
        "event_type, first_event_id, pressed_at, received_at, closed_at) "
        "VALUES ($1, $2, 'alarm', 'resolved', 1, $3, $4, 'alarm.panic', $5, $6, $6, now())",
        incident,
        f"T{uuid.uuid4().hex[:12]}",
        device,
        grid,
        event_id,
        t0,
    )
    queued = recorded + (3 + i) * ms
    for k, (created, sent) in enumerate([(queued, queued + (4 + i) * ms if paged else None), (queued + 50 * ms, None)]):
        await conn.execute(
            "INSERT INTO notifications (incident_id, officer_id, kind, level, reason, dedupe_key, created_at, sent_at, "
            "status) VALUES ($1, 'o', 'page', 'grid', 'opened', $2, $3, $4, $5)",
            incident,
            f"{incident}-{k}",
            created,
            sent,
            "sent" if sent else "pending",
        )


async def test_stages_of_a_step(env) -> None:  # type: ignore[no-untyped-def]
    tag = f"st{uuid.uuid4().hex[:8]}"
    since = await last_event_id(env.pool)
    t0 = datetime.now(UTC)
    async with env.pool.acquire() as conn, conn.transaction():
        for i in range(3):
            await _alarm(conn, tag, i, t0)
        await _alarm(conn, tag, 3, t0, paged=False)  # never acknowledged by the broker: left out
    got = await alarm_stages(env.pool, tag, since)
    assert got["n"] == 3
    # The stages of alarm i take 1+i, 2+i, 3+i and 4+i ms: p50 is alarm 1's.
    assert [got[s]["p50"] for s in STAGES] == [2.0, 3.0, 4.0, 5.0]
    assert [got[s]["p99"] for s in STAGES] == pytest.approx([2.98, 3.98, 4.98, 5.98])
    assert stages_line(got) == "2.0 / 3.0 / 4.0 / 5.0"


async def test_no_alarms_no_stages(env) -> None:  # type: ignore[no-untyped-def]
    got = await alarm_stages(env.pool, f"none{uuid.uuid4().hex[:8]}", 0)
    assert got["n"] == 0
    assert all(got[s] is None for s in STAGES)
    assert stages_line(got) == "-"

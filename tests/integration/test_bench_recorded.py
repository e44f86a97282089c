"""The benchmark counts a step's recorded events among the rows inserted since the step began,
and a heartbeat step's heartbeats once every device that beat has its last sequence recorded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from bench.run import all_recorded, count_recorded, heartbeats_recorded, last_event_id

pytestmark = pytest.mark.stack


async def _insert(pool, tag: str, n: int) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    await pool.executemany(
        "INSERT INTO events (device_id, event_id, type, seq, occurred_at, received_at, ingress, gateway_id) "
        "VALUES ($1, $2, 'device.heartbeat', $3, $4, $4, 'mqtt', 'test')",
        [(f"rec-{tag}", f"{tag}-{i}", i, now) for i in range(n)],
    )


async def test_a_step_counts_its_own_rows_since_it_began(env) -> None:  # type: ignore[no-untyped-def]
    pool = env.pool
    before, step, other = (f"t{uuid.uuid4().hex[:8]}" for _ in range(3))
    await _insert(pool, before, 5)
    since = await last_event_id(pool)
    assert not await all_recorded(pool, step, since, 3)
    await _insert(pool, step, 2)
    await _insert(pool, other, 4)  # rows of something else: the newest id says maybe, the count says no
    assert await count_recorded(pool, step, since) == 2
    assert not await all_recorded(pool, step, since, 3)
    async with pool.acquire() as conn:
        now = datetime.now(UTC)
        await conn.execute(
            "INSERT INTO events (device_id, event_id, type, seq, occurred_at, received_at, ingress, gateway_id) "
            "VALUES ($1, $2, 'device.heartbeat', 99, $3, $3, 'mqtt', 'test')",
            f"rec-{step}",
            f"{step}-last",
            now,
        )
    assert await all_recorded(pool, step, since, 3)
    assert await count_recorded(pool, before, since) == 0  # rows from before the step are not read
    assert await count_recorded(pool, before) == 5


async def _beat(pool, device_id: str, event_id: str, seq: int) -> None:  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO device_heartbeats (device_id, event_id, seq, occurred_at, received_at, ingress, gateway_id) "
            "VALUES ($1, $2, $3, $4, $4, 'mqtt', 'test')",
            device_id,
            event_id,
            seq,
            now,
        )
        await conn.execute("UPDATE devices SET last_seq = GREATEST(last_seq, $2) WHERE device_id = $1", device_id, seq)


async def test_a_heartbeat_step_is_recorded_when_its_devices_reached_their_last_beat(env) -> None:  # type: ignore[no-untyped-def]
    pool = env.pool
    a, b = (await env.add_device(), await env.add_device())
    step = f"h{uuid.uuid4().hex[:8]}"
    last = {a.device_id: 2, b.device_id: 1}
    await _beat(pool, a.device_id, f"{step}-1", 1)
    await _beat(pool, b.device_id, f"{step}-2", 1)
    assert not await heartbeats_recorded(pool, step, last, 3)  # a's last beat is not in
    await _beat(pool, a.device_id, f"{step}-3", 2)
    assert await heartbeats_recorded(pool, step, last, 3)
    assert await count_recorded(pool, step, heartbeats=True) == 3
    # Every device at its last beat, but one beat of the middle missing: the count says no.
    other = f"h{uuid.uuid4().hex[:8]}"
    await _beat(pool, a.device_id, f"{other}-1", 5)
    assert not await heartbeats_recorded(pool, other, {a.device_id: 5}, 2)

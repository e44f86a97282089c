"""The benchmark counts a step's recorded events among the rows inserted since the step began."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from bench.run import all_recorded, count_recorded, last_event_id

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

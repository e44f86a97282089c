"""The notifier's claim finds the due notifications through the range of the pending index,
not by reading every pending row: pages handed over under a lease stay pending until they are
recorded sent, and under load a claim that filtered them one by one took milliseconds."""

from __future__ import annotations

import pytest

from workers.notifier import _CLAIM

pytestmark = pytest.mark.stack


async def test_the_claim_bounds_the_pending_index_by_time(env) -> None:  # type: ignore[no-untyped-def]
    async with env.pool.acquire() as conn, conn.transaction():
        # On a test database the tables are nearly empty and any plan would do: ask for the
        # plan an index gives, as on a busy system.
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + _CLAIM.replace("$1", "100")))
    assert "notifications_pending_idx" in plan, plan
    assert "Index Cond: (next_attempt_at <= statement_timestamp())" in plan, plan

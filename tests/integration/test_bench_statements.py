"""The benchmark's per-statement figures (`bench.run --statements`) come from the stack's own
Postgres: tracking switched on for one database counts that database's statements."""

from __future__ import annotations

import pytest

from bench import statements
from core import db

pytestmark = pytest.mark.stack


async def test_a_steps_statements_by_time(env) -> None:  # type: ignore[no-untyped-def]
    conn = await db.connect(env.settings.database_url)
    try:
        await statements.enable(conn)
    finally:
        await conn.close()
    # Tracking applies to the sessions that start after it: a pool of its own.
    pool = await db.create_pool(env.settings.database_url, min_size=1, max_size=2)
    try:
        await statements.reset(pool)
        for i in range(30):
            await pool.fetchval("SELECT count(*) FROM units WHERE level = $1 AND code > $2", "grid", str(i))
        await pool.execute("SELECT pg_sleep(0.05)")
        got = await statements.top(pool, events=10)
    finally:
        await pool.close()

    by_text = {s["query"]: s for s in got}
    counted = by_text["SELECT count(*) FROM units WHERE level = $1 AND code > $2"]
    assert counted["calls"] == 30
    assert counted["rows"] == 30
    assert counted["buffers"] > 0
    slept = by_text["SELECT pg_sleep($1)"]
    assert slept["calls"] == 1
    assert slept["exec_ms"] >= 50
    assert slept["exec_us_per_event"] == pytest.approx(slept["exec_ms"] * 100, rel=0.01)
    # The longest first: the sleep took longer than the thirty counts.
    assert got[0]["query"] == "SELECT pg_sleep($1)"
    # Only what ran since the reset: none of the migrations or the demo city's inserts.
    assert not [s for s in got if "INSERT INTO units" in s["query"]]
    lines = statements.statements_lines(got, n=2)
    assert len(lines) == 2 and "pg_sleep" in lines[0]


async def test_a_server_without_the_library_is_refused_plainly() -> None:
    class NotLoaded:
        async def fetchval(self, query: str) -> str:
            return "auto_explain"

    with pytest.raises(statements.StatementsUnavailable, match="pg_stat_statements is not loaded"):
        await statements.enable(NotLoaded())  # type: ignore[arg-type]

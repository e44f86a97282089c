"""Where Postgres spends a step's time, statement by statement (`bench.run --statements`).

Postgres keeps per-statement figures in pg_stat_statements. The local stack loads it with
tracking off (deploy/stack.sh); `enable` switches it on for the benchmark's own database,
for the sessions that connect after it (the components, started next). Each step then
starts from zero (`reset`) and ends with the statements that took most of its time (`top`):
calls, planning and execution time, rows, buffers, WAL, and the execution time per event the
step sent, which compares steps of different rates and runs of different code. The bench's
own queries (the officers closing incidents, the counting at the end of a step) are among
them, under their own text.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg


class StatementsUnavailable(Exception):
    """pg_stat_statements is not loaded by the server."""


async def enable(conn: asyncpg.Connection[Any]) -> None:
    """Track the top-level statements of this connection's database, from its next sessions
    on. Needs a superuser (the local stack's role is one) and the library preloaded."""
    libs = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
    if "pg_stat_statements" not in {s.strip() for s in libs.split(",")}:
        raise StatementsUnavailable(
            f"pg_stat_statements is not loaded by this Postgres (shared_preload_libraries = {libs!r}); "
            "deploy/stack.sh loads it at start: stop the stack and run again"
        )
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    db = await conn.fetchval("SELECT quote_ident(current_database())")
    await conn.execute(f"ALTER DATABASE {db} SET pg_stat_statements.track = 'top'")
    await conn.execute(f"ALTER DATABASE {db} SET pg_stat_statements.track_planning = on")


async def reset(pool: asyncpg.Pool[Any]) -> None:
    """Forget this database's figures so far."""
    await pool.execute(
        "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)"
    )


_TOP = """
SELECT calls, plans, total_exec_time, total_plan_time, rows, shared_blks_hit, shared_blks_read,
       wal_bytes, query
  FROM pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY total_exec_time DESC
 LIMIT $1
"""


def _one_line(query: str, width: int) -> str:
    text = re.sub(r"--[^\n]*", " ", query)  # the comments of the project's statements
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= width else text[: width - 1] + "…"


async def top(pool: asyncpg.Pool[Any], events: int, n: int = 10) -> list[dict[str, Any]]:
    """The `n` statements that took most execution time since the last `reset`; `events`:
    what the step sent, for the time per event."""
    out = []
    for r in await pool.fetch(_TOP, n):
        exec_ms = float(r["total_exec_time"])
        out.append(
            {
                "calls": int(r["calls"]),
                "plans": int(r["plans"]),
                "exec_ms": round(exec_ms, 1),
                "plan_ms": round(float(r["total_plan_time"]), 1),
                "mean_exec_ms": round(exec_ms / r["calls"], 3) if r["calls"] else None,
                "exec_us_per_event": round(exec_ms * 1000 / events, 1) if events else None,
                "rows": int(r["rows"]),
                "buffers": int(r["shared_blks_hit"] + r["shared_blks_read"]),
                "buffers_read": int(r["shared_blks_read"]),
                "wal_bytes": int(r["wal_bytes"]),
                "query": _one_line(r["query"], 160),
            }
        )
    return out


def statements_lines(stmts: list[dict[str, Any]], n: int = 5) -> list[str]:
    """The first `n`, a line each, for the terminal."""
    lines = []
    for s in stmts[:n]:
        per = "-" if s["exec_us_per_event"] is None else f"{s['exec_us_per_event']:.1f}"
        mean = "-" if s["mean_exec_ms"] is None else f"{s['mean_exec_ms']:.3f}"
        lines.append(f"    {per:>8} µs/event {s['calls']:>7} calls {mean:>8} ms a call  {s['query'][:90]}")
    return lines

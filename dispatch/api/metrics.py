"""`/metrics` in the Prometheus text format: the counters of the components in this process,
and gauges read from Postgres."""

from __future__ import annotations

from aiohttp import web

from core.metrics import all_counters
from dispatch.api.common import POOL

_GAUGES = """
SELECT
  (SELECT count(*) FROM notifications WHERE status = 'pending') AS notifications_pending,
  (SELECT count(*) FROM notifications WHERE status = 'failed') AS notifications_failed,
  (SELECT count(*) FROM outbox) AS outbox_pending,
  (SELECT count(*) FROM incidents WHERE closed_at IS NULL AND due_at < clock_timestamp() - interval '5 seconds')
    AS deadlines_overdue
"""


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


async def metrics(request: web.Request) -> web.Response:
    lines = [
        "# HELP pingan_component_events_total Events counted by a component of this process.",
        "# TYPE pingan_component_events_total counter",
    ]
    for component, counts in sorted(all_counters().items()):
        for name, value in sorted(counts.items()):
            lines.append(
                f'pingan_component_events_total{{component="{_label(component)}",name="{_label(name)}"}} {value}'
            )
    async with request.app[POOL].acquire() as conn:
        g = await conn.fetchrow(_GAUGES)
        open_rows = await conn.fetch(
            "SELECT level, priority, count(*) AS n FROM incidents WHERE closed_at IS NULL GROUP BY 1, 2 ORDER BY 1, 2"
        )
    lines += [
        "# HELP pingan_incidents_open Open incidents by level and priority.",
        "# TYPE pingan_incidents_open gauge",
    ]
    for r in open_rows:
        lines.append(f'pingan_incidents_open{{level="{r["level"]}",priority="{r["priority"]}"}} {r["n"]}')
    for name in ("notifications_pending", "notifications_failed", "outbox_pending", "deadlines_overdue"):
        lines += [f"# TYPE pingan_{name} gauge", f"pingan_{name} {g[name]}"]
    return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")

"""Response times and resolution rates per unit and period, computed from the incidents'
recorded times (never estimated)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

# Incidents (not the major-incident umbrellas) of a unit's subtree opened in [from, to).
_BASE = """
WITH scope AS (
  SELECT i.*, g.path
    FROM incidents i
    JOIN units g ON g.code = i.grid_code
   WHERE NOT i.is_major AND $1 = ANY(g.path) AND i.opened_at >= $2 AND i.opened_at < $3
     AND i.category = ANY($4::text[])
)
"""

_SUMMARY = (
    _BASE
    + """
SELECT {group_expr} AS unit,
       count(*) AS incidents,
       count(*) FILTER (WHERE closed_at IS NOT NULL) AS closed,
       count(*) FILTER (WHERE outcome IN ('resolved', 'referred')) AS resolved,
       count(*) FILTER (WHERE outcome = 'false_alarm') AS false_alarms,
       count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE closed_at IS NULL) AS open,
       {pcts}
  FROM scope
 GROUP BY 1
 ORDER BY 1
"""
)

_MEASURES = {
    "to_notify": "first_notified_at",
    "to_acknowledge": "acknowledged_at",
    "to_arrive": "on_scene_at",
    "to_resolve": "CASE WHEN outcome IN ('resolved', 'referred', 'false_alarm') THEN closed_at END",
}


def _pcts() -> str:
    parts = []
    for name, col in _MEASURES.items():
        expr = f"extract(epoch FROM ({col}) - received_at)"
        for q in (50, 90, 99):
            parts.append(f"percentile_cont({q / 100}) WITHIN GROUP (ORDER BY {expr}) AS {name}_p{q}")
        parts.append(f"count({col}) AS {name}_n")
    return ",\n       ".join(parts)


def _shape(row: asyncpg.Record) -> dict[str, Any]:
    n = int(row["incidents"])
    out: dict[str, Any] = {
        "unit": row["unit"],
        "incidents": n,
        "open": int(row["open"]),
        "closed": int(row["closed"]),
        "resolved": int(row["resolved"]),
        "false_alarms": int(row["false_alarms"]),
        "cancelled": int(row["cancelled"]),
        "resolution_rate": round(int(row["resolved"]) / n, 4) if n else None,
        "response_times_s": {},
    }
    for name in _MEASURES:
        out["response_times_s"][name] = {
            "n": int(row[f"{name}_n"]),
            **{f"p{q}": _r(row[f"{name}_p{q}"]) for q in (50, 90, 99)},
        }
    return out


def _r(v: Any) -> float | None:
    return None if v is None else round(float(v), 3)


# Statistics scan a unit's incidents over a period: longer than the components' statement
# timeout (PINGAN_DB_COMMAND_TIMEOUT_S) may be fine for them.
STATS_TIMEOUT_S = 120.0


async def response_times(
    conn: asyncpg.Connection[Any],
    unit_code: str,
    since: datetime,
    until: datetime,
    *,
    categories: tuple[str, ...] = ("alarm",),
) -> dict[str, Any]:
    """The unit's totals, the same per child unit, and how many were acknowledged per level."""
    unit = await conn.fetchrow("SELECT code, level, name, name_en, path FROM units WHERE code = $1", unit_code)
    if unit is None:
        raise LookupError(unit_code)
    depth = len(unit["path"])
    total = await conn.fetch(
        _SUMMARY.format(group_expr="$1::text", pcts=_pcts()),
        unit_code,
        since,
        until,
        list(categories),
        timeout=STATS_TIMEOUT_S,
    )
    children = await conn.fetch(
        _SUMMARY.format(group_expr=f"path[{depth + 1}]", pcts=_pcts()),
        unit_code,
        since,
        until,
        list(categories),
        timeout=STATS_TIMEOUT_S,
    )
    by_level = await conn.fetch(
        _BASE + "SELECT ack_level, count(*) AS n FROM scope WHERE ack_level IS NOT NULL GROUP BY 1 ORDER BY 1",
        unit_code,
        since,
        until,
        list(categories),
        timeout=STATS_TIMEOUT_S,
    )
    empty = {"unit": unit_code, "incidents": 0, "resolution_rate": None, "response_times_s": {}}
    return {
        "unit": {"code": unit["code"], "level": unit["level"], "name": unit["name"], "name_en": unit["name_en"]},
        "from": since.isoformat(),
        "to": until.isoformat(),
        "total": _shape(total[0]) if total else empty,
        "children": [_shape(r) for r in children if r["unit"] is not None],
        "acknowledged_at_level": {r["ack_level"]: int(r["n"]) for r in by_level},
    }


def to_csv(body: dict[str, Any]) -> str:
    """The statistics as CSV, one row for the unit and one per child unit."""
    import csv
    import io

    out = io.StringIO()
    w = csv.writer(out)
    header = ["unit", "incidents", "open", "closed", "resolved", "false_alarms", "cancelled", "resolution_rate"]
    measures = ["to_notify", "to_acknowledge", "to_arrive", "to_resolve"]
    for m in measures:
        header += [f"{m}_n", f"{m}_p50_s", f"{m}_p90_s", f"{m}_p99_s"]
    w.writerow(["period", body["from"], body["to"], "unit", body["unit"]["code"], body["unit"]["name"]])
    w.writerow(header)
    for row in [body["total"], *body["children"]]:
        line = [row.get(k) for k in header[:8]]
        for m in measures:
            rt = row.get("response_times_s", {}).get(m, {})
            line += [rt.get("n"), rt.get("p50"), rt.get("p90"), rt.get("p99")]
        w.writerow(["" if v is None else v for v in line])
    return out.getvalue()

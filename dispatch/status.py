"""`dispatch status`: what the system did recently, read from Postgres."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

_STATUS = """
WITH w AS (SELECT clock_timestamp() - $1::interval AS since)
SELECT
  (SELECT count(*) FROM events, w WHERE received_at >= w.since)
    + (SELECT count(*) FROM device_heartbeats, w WHERE received_at >= w.since) AS events_received,
  (SELECT count(*) FROM events, w WHERE received_at >= w.since AND type LIKE 'alarm.%') AS alarms_received,
  (SELECT count(*) FROM device_heartbeats, w WHERE received_at >= w.since) AS heartbeats_received,
  (SELECT count(*) FROM rejected_inputs, w WHERE received_at >= w.since) AS events_rejected,
  (SELECT count(*) FROM unprocessable_events, w WHERE recorded_at >= w.since) AS unprocessable,
  (SELECT count(*) FROM incidents WHERE closed_at IS NULL) AS incidents_open,
  (SELECT count(*) FROM incidents, w WHERE opened_at >= w.since) AS incidents_opened,
  (SELECT count(*) FROM notifications, w WHERE status = 'sent' AND sent_at >= w.since) AS notifications_sent,
  (SELECT count(*) FROM notifications WHERE status = 'pending') AS notifications_pending,
  (SELECT count(*) FROM notifications WHERE status = 'failed') AS notifications_failed,
  (SELECT count(*) FROM outbox) AS outbox_pending
"""

# Press (the gateway's receipt of the first event) to the first notification delivered.
_LATENCY = """
SELECT count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99,
       max(ms) AS max
  FROM (SELECT extract(epoch FROM first_notified_at - received_at) * 1000 AS ms
          FROM incidents
         WHERE first_notified_at IS NOT NULL
           AND received_at >= clock_timestamp() - $1::interval) t
"""


async def status(conn: asyncpg.Connection[Any], *, window_s: int = 300) -> dict[str, Any]:
    window = timedelta(seconds=window_s)
    row = await conn.fetchrow(_STATUS, window)
    lat = await conn.fetchrow(_LATENCY, window)
    out: dict[str, Any] = {"window_s": window_s}
    out.update({k: int(v) for k, v in dict(row).items()})
    out["press_to_notification_ms"] = {
        "incidents": int(lat["n"]),
        "p50": _round(lat["p50"]),
        "p99": _round(lat["p99"]),
        "max": _round(lat["max"]),
    }
    return out


def _round(v: Any) -> float | None:
    return None if v is None else round(float(v), 1)

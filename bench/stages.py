"""Where the time of an alarm goes: a step's press-to-page latency split into stages, read
from the times the system itself records (every clock on the one machine of the benchmark).

- press -> gateway: `occurred_at` (the load generator's clock when it built the press) to
  `received_at` (the gateway's, when the message arrived): one MQTT hop.
- gateway -> event row: to `events.recorded_at` (Postgres's clock when the worker's batch
  statement wrote the row): the Kafka hop, the worker picking the record up, its transaction
  starting.
- event row -> page queued: to the first notification's `created_at`: the worker's plan and
  the statement that opens the incident.
- page queued -> PUBACK: to its `sent_at` (the notifier's clock once the broker acknowledged
  the page): the commit, the hand-over and the MQTT publish. The officer's app has the page
  before the broker's PUBACK comes back.
"""

from __future__ import annotations

from typing import Any

import asyncpg

STAGES = ("press_to_gateway", "gateway_to_event_row", "event_row_to_page_queued", "page_queued_to_puback")

# The step's alarms (rows after `$2` whose event id starts with the step's tag) that opened an
# incident, with the first page of each. Percentiles in milliseconds.
_STAGES = """
WITH e AS (
    SELECT device_id, event_id, occurred_at, received_at, recorded_at
      FROM events
     WHERE id > $2 AND event_id LIKE $1 AND type LIKE 'alarm.%'
), t AS (
    SELECT e.*, p.created_at AS queued_at, p.sent_at
      FROM e
      JOIN incidents i ON i.first_event_id = e.event_id AND i.device_id = e.device_id
     CROSS JOIN LATERAL (SELECT n.created_at, n.sent_at FROM notifications n
                          WHERE n.incident_id = i.incident_id ORDER BY n.id LIMIT 1) p
     WHERE p.sent_at IS NOT NULL
)
SELECT count(*) AS n,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM received_at - occurred_at) * 1000),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM recorded_at - received_at) * 1000),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM queued_at - recorded_at) * 1000),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - queued_at) * 1000)
  FROM t
"""


async def alarm_stages(pool: asyncpg.Pool[Any], tag: str, since_id: int) -> dict[str, Any]:
    """Per stage, p50 and p99 in ms over the step's alarms that opened an incident and paged
    an officer (`n` of them); None when there were none."""
    row = await pool.fetchrow(_STAGES, tag + "-%", since_id)  # an aggregate: always one row
    out: dict[str, Any] = {"n": int(row["n"])}
    for i, name in enumerate(STAGES, start=1):
        values = row[i]  # NULL when no alarm qualified
        out[name] = None if values is None else {"p50": round(values[0], 2), "p99": round(values[1], 2)}
    return out


def stages_line(stages: dict[str, Any] | None) -> str:
    """The p50s of the stages, for the terminal table."""
    if not stages or not stages["n"]:  # with alarms, every stage has its percentiles
        return "-"
    return " / ".join(str(stages[s]["p50"]) for s in STAGES)

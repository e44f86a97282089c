"""The escalation timer: acts on passed deadlines (reminders, escalation to the next level).

Deadlines live in Postgres (`incidents.due_at`), never in a timer's memory. Each step claims
due incidents with `FOR UPDATE SKIP LOCKED`, applies the state machine's `Tick` to each and
commits: several timers share the work, none escalates an incident twice, and a timer that
dies mid-step leaves the step to the others (its transaction rolls back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from core import db, kafka
from core.incident_model import Tick
from core.incident_service import IncidentService
from core.lifecycle import Component
from core.metrics import Counters
from core.pg_errors import is_transient
from core.settings import Settings
from core.timeutil import utcnow

log = structlog.get_logger(__name__)

_CLAIM = """
SELECT incident_id
  FROM incidents
 WHERE closed_at IS NULL AND due_at <= $1
 ORDER BY due_at
 LIMIT $2
 FOR UPDATE SKIP LOCKED
"""


class EscalationTimer(Component):
    name = "timer"

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool[Any],
        *,
        clock: Callable[[], datetime] = utcnow,
        batch: int = 100,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.pool = pool
        self.clock = clock
        self.batch = batch
        self.service = IncidentService(kafka.topics(settings))
        self.counters = Counters("timer")
        self.ready = asyncio.Event()

    async def run(self) -> None:
        self.ready.set()
        log.info("escalation timer ready", interval_s=self.settings.timer_interval_s)
        while not self.stopping:
            try:
                done = await self.step(self.clock())
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("postgres unavailable", error=repr(exc))
                done = 0
            if done < self.batch:
                await self.wait_stop(self.settings.timer_interval_s)
        log.info("escalation timer stopped", **self.counters.snapshot())

    async def step(self, now: datetime) -> int:
        """Act on every incident due at `now` (in batches); returns how many were stepped."""
        async with db.transaction(self.pool) as conn:
            rows = await conn.fetch(_CLAIM, now, self.batch)
            for r in rows:
                before, state = await self.service.perform(conn, r["incident_id"], Tick(), now, change="timer")
                if state.version == before["version"]:
                    # Claimed as due, yet nothing to do: the stored due time was stale. Store
                    # the state machine's own, so the incident is not claimed in a loop.
                    due = state.due_at if state.due_at is not None and state.due_at > now else None
                    await conn.execute("UPDATE incidents SET due_at = $2 WHERE incident_id = $1", r["incident_id"], due)
                    log.warning("stale deadline corrected", incident_id=str(r["incident_id"]), due_at=due)
                self.counters.inc("ticks")
                log.debug(
                    "deadline acted on",
                    incident_id=str(r["incident_id"]),
                    level=state.level,
                    awaiting=state.awaiting,
                )
        return len(rows)

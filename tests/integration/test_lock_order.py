"""The worker's batch locks the open incidents of its devices in incident_id order, as the
notifier's record of sent pages does: a batch whose devices pressed again, read while a page of
theirs is being recorded, must not deadlock with it (under a long burst it did, in the batch's
order)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from typing import Any

import asyncpg
import pytest

from core import kafka
from core.timeutil import utcnow
from schemas.events import event_class
from schemas.messages import AcceptedEvent, Ingress
from tests.support.waiting import wait_until
from workers.batch_recorder import _PLAN_READS
from workers.incident_store import Correlation, IncidentStore

pytestmark = pytest.mark.stack

GRID = "990102001001001"


def _press(device_id: str) -> AcceptedEvent:
    cls = event_class("alarm.panic")
    assert cls is not None
    now = utcnow()
    ev = cls(event_id=f"e-{uuid.uuid4().hex}", device_id=device_id, occurred_at=now, seq=1)
    return AcceptedEvent(event=ev, received_at=now, ingress=Ingress.MQTT, gateway_id="test")  # type: ignore[arg-type]


async def _discordant_pair(env: Any, store: IncidentStore) -> tuple[tuple[str, uuid.UUID], tuple[str, uuid.UUID]]:
    """Two devices with an open incident each, where the device that sorts first has the
    incident that sorts last: ((device, incident) locked first in incident_id order, the other)."""
    opened: dict[str, uuid.UUID] = {}
    for _ in range(20):
        dev = await env.add_device(GRID)
        async with env.pool.acquire() as conn, conn.transaction():
            out = await store.record(conn, _press(dev.device_id))
        opened[dev.device_id] = uuid.UUID(out.incident_ids[0])
        for (d1, i1), (d2, i2) in itertools.combinations(sorted(opened.items()), 2):
            if i1 > i2:  # d1 < d2 by device id, i1 > i2 by incident id
                return (d2, i2), (d1, i1)
    raise AssertionError("20 devices and no discordant pair")


async def test_a_batch_locks_its_open_incidents_in_incident_id_order(env) -> None:  # type: ignore[no-untyped-def]
    store = IncidentStore(kafka.topics(env.settings), correlation=Correlation(threshold=10**6))
    (low_dev, low), (high_dev, high) = await _discordant_pair(env, store)
    assert high_dev < low_dev and low < high

    notifier = await asyncpg.connect(env.settings.database_url)
    worker = await asyncpg.connect(env.settings.database_url)
    try:
        notifying, batch = notifier.transaction(), worker.transaction()
        await notifying.start()
        await batch.start()
        # The notifier records a page of the incident with the lower id first ...
        await notifier.execute("SELECT 1 FROM incidents WHERE incident_id = $1 FOR UPDATE", low)
        worker_pid = await worker.fetchval("SELECT pg_backend_pid()")
        now = utcnow()
        # ... while a batch whose devices come in the other order (by device id too) reads its plan.
        plan = asyncio.create_task(
            worker.fetch(_PLAN_READS, [high_dev, low_dev], ["alarm", "alarm"], [], [], now, [], [], [], now)
        )

        async def worker_waits() -> bool:
            return bool(
                await env.pool.fetchval("SELECT count(*) FROM pg_locks WHERE pid = $1 AND NOT granted", worker_pid)
            )

        await wait_until(worker_waits, timeout=10)
        # Waiting for the lower id, the batch holds nothing yet: the notifier takes the other
        # incident at once. (Locked in the batch's order, the batch would hold it, and the two
        # would deadlock.)
        await notifier.execute("SELECT 1 FROM incidents WHERE incident_id = $1 FOR UPDATE NOWAIT", high)
        assert not plan.done()
        await notifying.commit()
        rows = await asyncio.wait_for(plan, 10)
        await batch.commit()
        assert sorted(r["a"] for r in rows if r["row_kind"] == "open") == sorted([low_dev, high_dev])
    finally:
        await notifier.close()
        await worker.close()

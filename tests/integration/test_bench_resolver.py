"""The benchmark's simulated officers close what was paged, and nothing else (bench.run.Resolver).
Which scan a round's plan uses is the planner's choice on a table of a million incidents; on
the test database's small table any plan is an index scan, so that is not asserted here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from bench.run import resolve_round

pytestmark = pytest.mark.stack


async def _open(conn, device: str, *, paged: bool) -> uuid.UUID:  # type: ignore[no-untyped-def]
    incident = uuid.uuid4()
    now = datetime.now(UTC)
    await conn.execute(
        "INSERT INTO incidents (incident_id, case_number, category, status, priority, device_id, grid_code, "
        "event_type, first_event_id, pressed_at, received_at, first_notified_at) "
        "SELECT $1, $2, 'alarm', 'notified', 1, device_id, grid_code, 'alarm.panic', $3, $4, $4, $5 "
        "FROM devices WHERE device_id = $6",
        incident,
        f"R{uuid.uuid4().hex[:12]}",
        f"res-{incident}",
        now,
        now if paged else None,
        device,
    )
    return incident


async def test_a_round_closes_what_was_paged_and_nothing_else(env) -> None:  # type: ignore[no-untyped-def]
    async with env.pool.acquire() as conn:
        outer = conn.transaction()
        await outer.start()
        try:  # rolled back at the end: the round closes every paged incident of the database
            devices = [
                r["device_id"]
                for r in await conn.fetch(
                    "SELECT device_id FROM devices d WHERE NOT EXISTS (SELECT 1 FROM incidents i "
                    "WHERE i.device_id = d.device_id AND i.closed_at IS NULL) ORDER BY device_id LIMIT 3"
                )
            ]
            assert len(devices) == 3
            paged = [await _open(conn, d, paged=True) for d in devices[:2]]
            waiting = await _open(conn, devices[2], paged=False)
            assert await resolve_round(conn) >= 2
            rows = {
                r["incident_id"]: r
                for r in await conn.fetch(
                    "SELECT incident_id, status, closed_at, closed_by FROM incidents WHERE incident_id = ANY($1)",
                    [*paged, waiting],
                )
            }
            for i in paged:
                assert rows[i]["closed_at"] is not None and rows[i]["status"] == "resolved"
                assert rows[i]["closed_by"] == "bench"
            assert rows[waiting]["closed_at"] is None  # nobody was paged yet: left open
        finally:
            await outer.rollback()

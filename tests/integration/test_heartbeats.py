"""Heartbeats are recorded in their own table (device_heartbeats, migration 0016): once each,
by (device_id, event_id), with what they carried; they update their device's health as events
do, and leave `events` to what acts. Both ways of recording (the worker's batches and the
per-event path its batches fall back to) do the same, and the migration moves the heartbeats
recorded as events before it into the new table."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from core import kafka
from core.db import migrate, migrations
from core.timeutil import utcnow
from schemas.events import event_class
from schemas.messages import AcceptedEvent, Ingress
from workers.batch_recorder import BatchRecorder
from workers.incident_store import IncidentStore

pytestmark = pytest.mark.stack

GRID = "990102001001001"


def accepted(device_id: str, type_: str, seq: int, **fields: Any) -> AcceptedEvent:
    cls = event_class(type_)
    assert cls is not None
    at = utcnow() - timedelta(seconds=10 - seq)
    ev = cls(event_id=f"hb-{uuid.uuid4().hex[:10]}", device_id=device_id, occurred_at=at, seq=seq, **fields)
    return AcceptedEvent(event=ev, received_at=at, ingress=Ingress.MQTT, gateway_id="gw-test")  # type: ignore[arg-type]


class Rollback(Exception):
    pass


@pytest.mark.parametrize("batched", [True, False])
async def test_a_heartbeat_is_recorded_once_in_its_own_table(env, batched: bool) -> None:  # type: ignore[no-untyped-def]
    dev = await env.add_device(GRID)
    d = dev.device_id
    first = accepted(d, "device.heartbeat", 1, battery=50, data={"rssi": -71})
    alarm = accepted(d, "alarm.panic", 2)
    last = accepted(d, "device.heartbeat", 3, battery=40)
    batch = [first, alarm, first, last]  # the first heartbeat redelivered
    store = IncidentStore(kafka.topics(env.settings))
    async with env.pool.acquire() as conn:
        with pytest.raises(Rollback):
            async with conn.transaction():
                if batched:
                    out = await BatchRecorder(store).record(conn, [(a, 0, i) for i, a in enumerate(batch)])
                    recorded, duplicates = out.recorded, out.duplicates
                else:
                    outs = [await store.record(conn, a, partition=0, offset=i) for i, a in enumerate(batch)]
                    recorded, duplicates = sum(o.recorded for o in outs), sum(o.duplicates for o in outs)
                assert (recorded, duplicates) == (3, 1)
                events = await conn.fetch("SELECT event_id, type FROM events WHERE device_id = $1", d)
                assert [(r["event_id"], r["type"]) for r in events] == [(alarm.event.event_id, "alarm.panic")]  # type: ignore[attr-defined]
                beats = await conn.fetch(
                    "SELECT event_id, seq, occurred_at, received_at, battery, ingress, gateway_id, data "
                    "FROM device_heartbeats WHERE device_id = $1 ORDER BY seq",
                    d,
                )
                want = [
                    (ev.event_id, ev.seq, ev.occurred_at, a.received_at, ev.battery, "mqtt", "gw-test", data)
                    for a, data in ((first, {"rssi": -71}), (last, None))
                    for ev in [a.event]
                ]
                assert [tuple(r) for r in beats] == want
                health = await conn.fetchrow(
                    "SELECT last_seq, battery, online, last_seen_at FROM devices WHERE device_id = $1", d
                )
                assert tuple(health) == (3, 40, True, last.received_at)
                # The alarm acted as ever: its incident is open.
                assert await conn.fetchval("SELECT count(*) FROM incidents WHERE device_id = $1", d) == 1
                raise Rollback


async def test_the_migration_moves_heartbeats_out_of_events(env) -> None:  # type: ignore[no-untyped-def]
    """The migrations up to 0015 in a schema of their own, heartbeats and an alarm recorded as
    events, then 0016: the heartbeats are in device_heartbeats, the alarm stays."""
    schema = f"mig_{uuid.uuid4().hex[:8]}"
    before = [m for m in migrations() if m[0] < 16]
    assert next(m[0] for m in migrations() if m[0] >= 16) == 16
    async with env.pool.acquire() as conn:
        try:
            await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.execute(f"SET search_path TO {schema}")
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for version, name, sql in before:
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            now = utcnow()
            await conn.executemany(
                "INSERT INTO events (device_id, event_id, type, seq, occurred_at, received_at, ingress, gateway_id, "
                "battery, data) VALUES ('m-1', $1, $2, $3, $4, $4, 'http', 'gw-old', $5, $6)",
                [
                    ("b1", "device.heartbeat", 1, now, 90, {}),
                    ("a2", "alarm.fall", 2, now, None, {}),
                    ("b3", "device.heartbeat", 3, now, 88, {"rssi": -60}),
                ],
            )
            applied = await migrate(conn)
            assert applied[0].startswith("0016_")
            assert [r["event_id"] for r in await conn.fetch("SELECT event_id FROM events ORDER BY id")] == ["a2"]
            moved = await conn.fetch(
                "SELECT event_id, seq, battery, ingress, gateway_id, data FROM device_heartbeats ORDER BY seq"
            )
            assert [tuple(r) for r in moved] == [
                ("b1", 1, 90, "http", "gw-old", None),
                ("b3", 3, 88, "http", "gw-old", {"rssi": -60}),
            ]
        finally:
            await conn.execute("RESET search_path")
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

"""The outbox relay against the real Postgres, Kafka and Mosquitto: due rows go out in id order,
to Kafka or to MQTT, and leave the outbox once the broker holds them; rows not yet due stay."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer

from core import kafka
from tests.support.mqtt_clients import platform_client
from tests.support.waiting import wait_until
from workers.outbox_relay import OutboxRelay

pytestmark = pytest.mark.stack


async def test_due_rows_are_published_in_order_and_leave_the_outbox(env) -> None:  # type: ignore[no-untyped-def]
    await kafka.ensure_topics(env.settings)
    topic = kafka.topics(env.settings).incident_updates
    mqtt_topic = "pingan/v1/devices/t-relay/receipts"
    observer = await platform_client(env.settings, mqtt_topic)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=env.settings.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    async with env.pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO outbox (destination, topic, key, payload) VALUES ($1, $2, $3, $4)",
            [
                ("kafka", topic, "inc-1", b'{"n": 1}'),
                ("mqtt", mqtt_topic, None, b'{"n": 2}'),
                ("kafka", topic, "inc-1", b'{"n": 3}'),
            ],
        )
        later = await conn.fetchval(
            "INSERT INTO outbox (destination, topic, key, payload, next_attempt_at) "
            "VALUES ('kafka', $1, 'inc-1', '{\"n\": 4}', clock_timestamp() + $2::interval) RETURNING id",
            topic,
            timedelta(hours=1),
        )
    relay = OutboxRelay(env.settings, env.pool)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.ready.wait(), 30)

        async def only_the_later_row_left() -> bool:
            return [r["id"] for r in await env.pool.fetch("SELECT id FROM outbox")] == [later]

        await wait_until(only_the_later_row_left, timeout=15)
        got: list[bytes] = []
        while len(got) < 2:
            batches = await consumer.getmany(timeout_ms=5000)
            assert batches, f"Kafka gave only {got}"
            got += [r.value for recs in batches.values() for r in recs if r.value is not None]
        assert got == [b'{"n": 1}', b'{"n": 3}']  # in id order, and the row not yet due is not among them
        _, body = await observer.wait_for(lambda b: b.get("n") == 2, timeout=10)
        assert body == {"n": 2}
        assert relay.counters.snapshot().get("published") == 3
    finally:
        relay.request_stop()
        await asyncio.wait_for(task, 30)
        await consumer.stop()
        await observer.close()


async def test_wake_ups_that_came_before_a_claim_do_not_bring_an_empty_one(env) -> None:  # type: ignore[no-untyped-def]
    """A worker's commit and the notifier's record of its page each NOTIFY the relay; the
    second comes while the relay lingers after the first. The one claim after the linger takes
    the rows of both: no second round to claim nothing."""
    await kafka.ensure_topics(env.settings)
    topic = kafka.topics(env.settings).incident_updates
    # A long poll: only the wake-ups bring a round here.
    relay = OutboxRelay(env.settings.replace(relay_linger_ms=300, poll_interval_s=30), env.pool)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(relay.ready.wait(), 30)
        await asyncio.sleep(1.0)  # the rounds of the start (the listener's first wake-up) are over
        empty_before = relay.counters.get("empty_claims")
        async with env.pool.acquire() as conn:
            for n in (1, 2):  # two commits, two NOTIFYs, 50 ms apart: both within the linger
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO outbox (destination, topic, key, payload) VALUES ('kafka', $1, 'inc-2', $2)",
                        topic,
                        f'{{"n": {n}}}'.encode(),
                    )
                    await conn.execute("SELECT pg_notify('pingan_outbox', '')")
                await asyncio.sleep(0.05)

        async def outbox_empty() -> bool:
            return await env.pool.fetchval("SELECT count(*) FROM outbox WHERE key = 'inc-2'") == 0

        await wait_until(outbox_empty, timeout=15)
        await asyncio.sleep(1.0)  # more than a linger and a round: an empty claim would have come
        assert relay.counters.get("empty_claims") == empty_before
        assert relay.counters.get("published") == 2
    finally:
        relay.request_stop()
        await asyncio.wait_for(task, 30)

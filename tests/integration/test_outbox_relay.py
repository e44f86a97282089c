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

"""A worker commits its Kafka offsets at most every so often, and the last ones when it stops:
a worker stopped in an orderly way leaves nothing to redeliver."""

from __future__ import annotations

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from core import kafka
from schemas import topics
from tests.support.mqtt_clients import device_client, event_payload
from tests.support.pipeline import Pipeline
from tests.support.waiting import wait_until

pytestmark = pytest.mark.stack

GRID = "990102001001001"


async def test_a_stopped_worker_has_committed_every_offset_it_recorded(env) -> None:  # type: ignore[no-untyped-def]
    settings = env.settings
    pipeline = Pipeline(settings, env.pool, names=("gateway", "worker"))
    await pipeline.start()
    stopped = False
    try:
        ids = []
        for _ in range(5):
            dev = await env.add_device(GRID, "panic_button")
            device = await device_client(settings, dev.device_id, dev.password)
            try:
                body = event_payload(dev.device_id, "device.heartbeat")
                await device.client.publish(topics.device_events(dev.device_id), orjson.dumps(body), qos=1)
                ids.append(body["event_id"])
            finally:
                await device.close()

        async def recorded() -> bool:
            n = await env.pool.fetchval("SELECT count(*) FROM device_heartbeats WHERE event_id = ANY($1)", ids)
            return bool(n == len(ids))

        await wait_until(recorded)
        await pipeline.stop()  # right after the batch: its commit may still be in its pause
        stopped = True
    finally:
        if not stopped:
            await pipeline.stop()

    topic = kafka.topics(settings).alarm_events
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.kafka_consumer_group)
    finally:
        await admin.close()
    probe = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await probe.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        ends = await probe.end_offsets(parts)
    finally:
        await probe.stop()
    assert sum(ends.values()) > 0
    for tp in parts:
        done = committed.get(tp)
        assert (done.offset if done else 0) == ends[tp], tp

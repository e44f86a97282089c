"""Heartbeats handed to the real Kafka a batch per partition land where a record sent alone
with the same key lands (a device's events stay on one partition, so with one worker), in the
order they were handed over, each once."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer

from core import kafka
from core.kafka_batches import BatchedSends

pytestmark = pytest.mark.stack


async def test_batched_records_land_on_their_keys_partition_in_order(env) -> None:  # type: ignore[no-untyped-def]
    settings = env.settings
    await kafka.ensure_topics(settings)
    topic = kafka.topics(settings).alarm_events
    tag = uuid.uuid4().hex[:8]
    producer = kafka.producer(settings, client_id=f"test-batches-{tag}")
    await producer.start()
    sends = BatchedSends(producer, linger_s=0.01)
    await sends.start()
    try:
        devices = [f"batch-{tag}-{i}".encode() for i in range(40)]
        # one record of each device alone, as an alarm goes: where its later records must land
        alone = {d: await producer.send_and_wait(topic, b"alone", key=d) for d in devices}
        deliveries = []
        for n in range(1000):
            deliveries.append(sends.send(topic, devices[n % len(devices)], b"%d" % n))
            if n % 250 == 249:
                await asyncio.sleep(0.02)  # a few deliveries, not one
        assert len({id(f) for f in deliveries}) > 1
        await asyncio.wait_for(asyncio.gather(*deliveries), 30)
    finally:
        await sends.stop()
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        seen: dict[bytes, list[tuple[int, bytes]]] = defaultdict(list)
        want = len(devices) + 1000
        got = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while got < want and loop.time() < deadline:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                for rec in recs:
                    if rec.key in alone:
                        seen[rec.key].append((rec.partition, rec.value))
                        got += 1
    finally:
        await consumer.stop()
    assert got == want
    for d in devices:
        partitions = {p for p, _ in seen[d]}
        assert partitions == {alone[d].partition}
        values = [v for _, v in seen[d]]
        assert values[0] == b"alone"
        assert [int(v) for v in values[1:]] == list(range(devices.index(d), 1000, len(devices)))

"""Consumer groups of throw-away runs can be deleted (the broker loads every group it knows at
start: hundreds of old ones made a benchmark stack's Kafka miss its start-up wait)."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from core import kafka

pytestmark = pytest.mark.stack

GROUP_ID_NOT_FOUND = 69
NON_EMPTY_GROUP = 68


async def _group_with_offsets(env, group: str) -> AIOKafkaConsumer:  # type: ignore[no-untyped-def]
    consumer = kafka.consumer(env.settings, kafka.topics(env.settings).alarm_events, group_id=group, client_id=group)
    await consumer.start()
    await consumer.getmany(timeout_ms=500)
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=500)
    await consumer.commit({tp: 0 for tp in consumer.assignment()})
    return consumer


async def test_deleted_groups_are_gone_and_live_ones_are_kept(env) -> None:  # type: ignore[no-untyped-def]
    await kafka.ensure_topics(env.settings)
    tag = uuid.uuid4().hex[:8]
    gone, live = f"pingan-test-gone-{tag}", f"pingan-test-live-{tag}"
    old = await _group_with_offsets(env, gone)
    await old.stop()
    member = await _group_with_offsets(env, live)
    admin = AIOKafkaAdminClient(bootstrap_servers=env.settings.kafka_bootstrap)
    await admin.start()
    try:
        assert {gone, live} <= {g[0] for g in await admin.list_consumer_groups()}
        codes = await kafka.delete_consumer_groups(admin, [gone, live, f"pingan-test-never-{tag}"])
        assert codes == {gone: 0, live: NON_EMPTY_GROUP, f"pingan-test-never-{tag}": GROUP_ID_NOT_FOUND}
        left = {g[0] for g in await admin.list_consumer_groups()}
        assert gone not in left and live in left
        await member.stop()
        assert await kafka.delete_consumer_groups(admin, [live]) == {live: 0}
    finally:
        await admin.close()

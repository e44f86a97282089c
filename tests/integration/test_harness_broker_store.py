"""The benchmark's and the fault suite's look at what the broker holds at the start of a run,
against the real Mosquitto: a session left behind by a client that went away is counted."""

from __future__ import annotations

import uuid

import pytest

from bench.harness import broker_store
from core.platform_mqtt import discard_session, platform_client
from tests.support.waiting import wait_until

pytestmark = pytest.mark.stack


async def test_a_session_left_behind_is_counted(env) -> None:  # type: ignore[no-untyped-def]
    before = await broker_store(env.settings)
    assert before["stored_messages"] >= 0
    client_id = f"pingan-left-{uuid.uuid4().hex[:8]}"
    left = platform_client(env.settings, client_id=client_id, name="test.left", persistent=True)
    await left.start()
    await left.stop()  # away, its session kept
    try:

        async def counted() -> bool:
            return (await broker_store(env.settings)).get("away_sessions", 0) > before.get("away_sessions", 0)

        await wait_until(counted, timeout=25)  # $SYS is published every 10 s
    finally:
        await discard_session(env.settings, client_id)

"""A gateway's mirror of the device registry (gateways/device_mirror.py), against the real
Postgres: the whole registry is read at start, a press then needs no lookup, and a change
still reaches the gateway at once."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson

from gateways.intake import Intake
from schemas.messages import Ingress
from tests.support.mqtt_clients import event_payload


async def _intake(env) -> Intake:  # type: ignore[no-untyped-def]
    intake = Intake(env.settings, env.pool, gateway_id="mirror-test", ingress=Ingress.MQTT)
    await intake.start()
    assert intake.mirror is not None
    await asyncio.wait_for(intake.mirror.loaded.wait(), 10)
    return intake


async def _take(intake: Intake, device_id: str, type_: str = "alarm.panic"):  # type: ignore[no-untyped-def]
    return await intake.take(
        orjson.dumps(event_payload(device_id, type_)),
        topic_device=device_id,
        source=f"pingan/v1/devices/{device_id}/events",
        received_at=datetime.now(UTC),
    )


async def test_the_whole_registry_is_read_and_a_press_asks_postgres_nothing(env) -> None:
    dev = await env.add_device()
    intake = await _intake(env)
    try:
        registry = await env.pool.fetch("SELECT device_id FROM devices")
        now = time.monotonic()
        assert len(registry) > 1
        assert all(intake.validator.devices.fresh(r["device_id"], now) for r in registry)

        asked: list[object] = []

        async def no_lookup(*args: object) -> None:
            asked.append(args)
            raise AssertionError("the registry was asked")

        intake.mirror.registry.__call__ = no_lookup  # type: ignore[method-assign,union-attr]
        intake.mirror.registry.many = no_lookup  # type: ignore[method-assign,union-attr]
        await intake.prefetch([dev.device_id])
        taken = await _take(intake, dev.device_id)
        assert taken.accepted, taken.result
        assert asked == []
    finally:
        await intake.stop()


async def test_a_device_deactivated_after_the_read_is_refused_at_once(env) -> None:
    dev = await env.add_device()
    intake = await _intake(env)
    try:
        assert (await _take(intake, dev.device_id, "device.heartbeat")).accepted
        async with env.pool.acquire() as conn:
            await conn.execute("UPDATE devices SET active = false WHERE device_id = $1", dev.device_id)
        deadline = time.monotonic() + 5
        while intake.validator.devices.fresh(dev.device_id, time.monotonic()):
            assert time.monotonic() < deadline, "the change did not reach the gateway"
            await asyncio.sleep(0.02)
        refused = await _take(intake, dev.device_id)
        assert not refused.accepted and refused.result.reason.value == "inactive_device"  # type: ignore[union-attr]
        # Read again, the registry says the same.
        await intake.mirror.read()  # type: ignore[union-attr]
        assert not (await _take(intake, dev.device_id)).accepted
    finally:
        await intake.stop()


async def test_a_device_added_after_the_read_is_looked_up_on_demand(env) -> None:
    intake = await _intake(env)
    try:
        dev = await env.add_device()
        assert not intake.validator.devices.fresh(dev.device_id, time.monotonic())
        assert (await _take(intake, dev.device_id)).accepted
    finally:
        await intake.stop()


async def test_without_the_mirror_nothing_is_read_ahead(env) -> None:
    dev = await env.add_device()
    intake = Intake(env.settings.replace(device_mirror=False), env.pool, gateway_id="no-mirror", ingress=Ingress.MQTT)
    await intake.start()
    try:
        assert intake.mirror is None
        assert not intake.validator.devices.fresh(dev.device_id, time.monotonic())
        assert (await _take(intake, dev.device_id)).accepted
    finally:
        await intake.stop()

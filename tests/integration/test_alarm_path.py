"""One alarm, end to end, on the real broker, Kafka and Postgres."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from core import kafka
from core.mqtt import MqttPublishError
from core.timeutil import utcnow
from schemas import topics
from schemas.messages import Ingress
from tests.support.mqtt_clients import device_client, event_payload, platform_client
from tests.support.waiting import wait_until

pytestmark = pytest.mark.stack

GRID = "990102001001001"
GRID_OFFICER = f"go-{GRID}"


async def test_press_reaches_receipt_incident_and_officer_within_two_seconds(env, pipeline) -> None:
    dev = await env.add_device(GRID, "panic_button")
    device = await device_client(env.settings, dev.device_id, dev.password)
    officer = await platform_client(env.settings, topics.officer_notifications(GRID_OFFICER))
    try:
        body = event_payload(dev.device_id)
        t0 = time.monotonic()
        await device.client.publish(topics.device_events(dev.device_id), orjson.dumps(body), qos=1)

        await device.wait_for(lambda r: r["status"] == "accepted" and r["event_id"] == body["event_id"], timeout=2)
        note_msg, note = await officer.wait_for(lambda n: n["device_id"] == dev.device_id, timeout=2)
        opened_msg, opened = await device.wait_for(
            lambda r: r["status"] == "incident_opened" and r["event_id"] == body["event_id"], timeout=2
        )
        assert note_msg.received_monotonic - t0 < 2.0
        assert opened_msg.received_monotonic - t0 < 2.0
        assert note["officer_id"] == GRID_OFFICER
        assert note["event_id"] == body["event_id"]
        assert note["case_number"] == opened["case_number"]
        assert note["grid_code"] == GRID
        assert note["level"] == "grid"
        assert "panic" in note["reason"]

        row = await env.pool.fetchrow("SELECT * FROM incidents WHERE device_id = $1", dev.device_id)
        assert row is not None
        assert str(row["incident_id"]) == opened["incident_id"] == note["incident_id"]
        assert row["priority"] == 1 and row["category"] == "alarm"
        assert row["case_number"].startswith("990102-")

        async def notified() -> Any:
            return await env.pool.fetchrow(
                "SELECT status, first_notified_at FROM incidents WHERE device_id = $1",
                dev.device_id,
            )

        r = await wait_until(lambda: _if(notified(), lambda r: r["first_notified_at"] is not None))
        assert r["status"] == "notified"
        sent = await env.pool.fetchrow(
            "SELECT status, sent_at FROM notifications WHERE incident_id = $1 AND officer_id = $2",
            row["incident_id"],
            GRID_OFFICER,
        )
        assert sent["status"] == "sent" and sent["sent_at"] is not None
        kinds = [
            r["kind"]
            for r in await env.pool.fetch(
                "SELECT kind FROM incident_timeline WHERE incident_id = $1 ORDER BY id",
                row["incident_id"],
            )
        ]
        assert kinds[0] == "opened"
        assert "notifications_queued" in kinds
    finally:
        await device.close()
        await officer.close()


async def _if(coro: Any, pred: Any) -> Any:
    value = await coro
    return value if value is not None and pred(value) else None


async def test_same_event_twice_is_recorded_once(env, pipeline) -> None:
    dev = await env.add_device(GRID, "pendant")
    device = await device_client(env.settings, dev.device_id, dev.password)
    try:
        body = orjson.dumps(event_payload(dev.device_id))
        topic = topics.device_events(dev.device_id)
        await device.client.publish(topic, body, qos=1)
        await device.client.publish(topic, body, qos=1)

        # And the same event redelivered by Kafka itself, as after a worker crash.
        event = orjson.loads(body)
        producer = kafka.producer(env.settings, client_id="test-redeliver")
        await producer.start()
        try:
            record = {
                "event": event,
                "received_at": utcnow().isoformat(),
                "ingress": Ingress.MQTT.value,
                "gateway_id": "test",
            }
            await producer.send_and_wait(
                env.settings.kafka_topic_prefix + ".alarm-events",
                orjson.dumps(record),
                key=dev.device_id.encode(),
            )
        finally:
            await producer.stop()

        await device.wait_for(lambda r: r["status"] == "incident_opened")

        async def accepted_twice() -> bool:
            return sum(1 for r in device.json() if r["status"] == "accepted") == 2

        await wait_until(accepted_twice)
        await asyncio.sleep(1.0)  # give a wrongly duplicated record time to show up
        assert await env.pool.fetchval("SELECT count(*) FROM events WHERE device_id = $1", dev.device_id) == 1
        assert await env.pool.fetchval("SELECT count(*) FROM incidents WHERE device_id = $1", dev.device_id) == 1
        assert await env.pool.fetchval("SELECT event_count FROM incidents WHERE device_id = $1", dev.device_id) == 1
    finally:
        await device.close()


async def test_three_presses_while_open_join_one_incident(env, pipeline) -> None:
    dev = await env.add_device(GRID, "panic_button")
    device = await device_client(env.settings, dev.device_id, dev.password)
    try:
        for seq in (1, 2, 3):
            await device.client.publish(
                topics.device_events(dev.device_id),
                orjson.dumps(event_payload(dev.device_id, seq=seq)),
                qos=1,
            )

        async def three_events() -> bool:
            n = await env.pool.fetchval("SELECT count(*) FROM events WHERE device_id = $1", dev.device_id)
            return n == 3

        await wait_until(three_events)
        incidents = await env.pool.fetch("SELECT * FROM incidents WHERE device_id = $1", dev.device_id)
        assert len(incidents) == 1
        assert incidents[0]["event_count"] == 3

        async def both_joined() -> bool:  # the relay publishes receipts in batches: wait for both
            return [r["status"] for r in device.json()].count("incident_joined") >= 2

        await wait_until(both_joined)
        await asyncio.sleep(0.5)  # give a wrongly repeated receipt time to show up
        statuses = [r["status"] for r in device.json()]
        assert statuses.count("incident_opened") == 1
        assert statuses.count("incident_joined") == 2
        notes = await env.pool.fetchval(
            "SELECT count(*) FROM notifications WHERE incident_id = $1", incidents[0]["incident_id"]
        )
        assert notes == 1  # the grid officer is told once, not three times
    finally:
        await device.close()


async def test_device_cannot_publish_as_another_device(env, pipeline) -> None:
    a = await env.add_device(GRID)
    b = await env.add_device(GRID)
    device = await device_client(env.settings, a.device_id, a.password)
    try:
        with pytest.raises(MqttPublishError) as err:
            await device.client.publish(
                topics.device_events(b.device_id), orjson.dumps(event_payload(b.device_id)), qos=1
            )
        assert err.value.reason_code == 135  # not authorized
        await asyncio.sleep(1.0)
        assert await env.pool.fetchval("SELECT count(*) FROM events WHERE device_id = $1", b.device_id) == 0
    finally:
        await device.close()


def _oversized(device_id: str) -> bytes:
    return orjson.dumps(event_payload(device_id, data={"pad": "x" * 5000}))


BAD_INPUTS = {
    "device_mismatch": lambda own, other: (own, orjson.dumps(event_payload(other))),
    "unknown_device": lambda own, other: ("ghost-device-1", orjson.dumps(event_payload("ghost-device-1"))),
    "malformed": lambda own, other: (own, b'{"event_id": "x", "type": "alarm.panic",'),
    "too_large": lambda own, other: (own, _oversized(own)),
    "unknown_type": lambda own, other: (own, orjson.dumps(event_payload(own, "alarm.meteor"))),
    "invalid": lambda own, other: (own, orjson.dumps({**event_payload(own), "seq": -1})),
}


@pytest.mark.parametrize("reason", list(BAD_INPUTS))
async def test_bad_input_goes_to_dead_letter_and_good_input_keeps_flowing(env, pipeline, reason: str) -> None:
    dev = await env.add_device(GRID)
    other = await env.add_device(GRID)
    device = await device_client(env.settings, dev.device_id, dev.password)
    # The platform account may publish anywhere: it stands in for a device unknown to the registry.
    platform = await platform_client(env.settings)
    dlq = AIOKafkaConsumer(
        kafka.topics(env.settings).alarm_events_dlq,
        bootstrap_servers=env.settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await dlq.start()
    try:
        topic_device, payload = BAD_INPUTS[reason](dev.device_id, other.device_id)
        publisher = device if topic_device == dev.device_id else platform
        await publisher.client.publish(topics.device_events(topic_device), payload, qos=1)
        good = event_payload(dev.device_id, seq=7)
        await device.client.publish(topics.device_events(dev.device_id), orjson.dumps(good), qos=1)

        # The dead-letter topic holds the rejected input with its reason.
        found = None
        deadline = time.monotonic() + 10
        while found is None and time.monotonic() < deadline:
            batch = await dlq.getmany(timeout_ms=500)
            for recs in batch.values():
                for rec in recs:
                    r = orjson.loads(rec.value)
                    if r["topic"] == topics.device_events(topic_device) and r["reason"] == reason:
                        found = r
        assert found is not None, f"no {reason} record in the dead-letter topic"
        assert found["detail"]
        assert found["payload_bytes"] == len(payload)

        # The good event right after it is processed.
        await device.wait_for(lambda r: r["status"] == "incident_opened" and r["event_id"] == good["event_id"])
        if topic_device == dev.device_id:
            _, rej = await device.wait_for(lambda r: r["status"] == "rejected")
            assert rej["reason"] == reason and rej["detail"]
        assert await env.pool.fetchval("SELECT count(*) FROM events WHERE device_id = $1", dev.device_id) == 1

        # And the rejection is on the record in Postgres.
        async def recorded() -> Any:
            return await env.pool.fetchval(
                "SELECT count(*) FROM rejected_inputs WHERE mqtt_topic = $1 AND reason = $2",
                topics.device_events(topic_device),
                reason,
            )

        await wait_until(recorded)
    finally:
        await dlq.stop()
        await device.close()
        await platform.close()


async def test_heartbeat_gets_no_accepted_receipt_but_a_refused_one_is_told(env, pipeline) -> None:
    """Heartbeats are acknowledged by the broker's PUBACK alone; a refusal is still explained,
    and so is a wrong device clock."""
    dev = await env.add_device(GRID, "panic_button")
    device = await device_client(env.settings, dev.device_id, dev.password)
    try:
        beat = event_payload(dev.device_id, "device.heartbeat", battery=77)
        await device.client.publish(topics.device_events(dev.device_id), orjson.dumps(beat), qos=1)
        bad = event_payload(dev.device_id, "device.heartbeat", seq=2, battery=1000)
        await device.client.publish(topics.device_events(dev.device_id), orjson.dumps(bad), qos=1)
        skewed = event_payload(dev.device_id, "device.heartbeat", seq=3, occurred_at="2001-01-01T00:00:00Z")
        await device.client.publish(topics.device_events(dev.device_id), orjson.dumps(skewed), qos=1)
        # The refused one is told, with its reason; the one with a wrong clock gets a warning ...
        _, refused = await device.wait_for(lambda r: r["event_id"] == bad["event_id"], timeout=5)
        assert refused["status"] == "rejected" and refused["reason"] == "invalid"
        _, warned = await device.wait_for(lambda r: r["event_id"] == skewed["event_id"], timeout=5)
        assert warned["status"] == "accepted" and warned["detail"]
        # ... the good one is recorded and updates the device's health, without a receipt.
        row = await wait_until(
            lambda: env.pool.fetchrow(
                "SELECT d.battery FROM device_heartbeats h JOIN devices d USING (device_id) WHERE h.event_id = $1",
                beat["event_id"],
            )
        )
        assert row["battery"] == 77
        press = event_payload(dev.device_id, seq=4)
        await device.client.publish(topics.device_events(dev.device_id), orjson.dumps(press), qos=1)
        await device.wait_for(lambda r: r["event_id"] == press["event_id"] and r["status"] == "accepted", timeout=5)
        assert not [r for r in device.json() if r.get("event_id") == beat["event_id"]]
    finally:
        await device.close()

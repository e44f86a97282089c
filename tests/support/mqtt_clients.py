"""MQTT clients as a test uses them: a device with its own credentials, an observer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from core.mqtt import MqttClient, MqttMessage
from core.settings import Settings
from schemas import topics


def event_payload(
    device_id: str, type_: str = "alarm.panic", *, event_id: str | None = None, seq: int = 1, **extra: Any
) -> dict[str, Any]:
    body = {
        "event_id": event_id or f"e-{uuid.uuid4().hex}",
        "device_id": device_id,
        "type": type_,
        "occurred_at": datetime.now(UTC).isoformat(),
        "seq": seq,
    }
    body.update(extra)
    return body


class Collector:
    """Reads a client's messages into a list in the background; waits for a match."""

    def __init__(self, client: MqttClient) -> None:
        self.client = client
        self.messages: list[MqttMessage] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read(), name=f"collector.{client.client_id}")

    async def _read(self) -> None:
        async for m in self.client.messages():
            self.messages.append(m)
            self._changed.set()

    def json(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.payload) for m in self.messages]

    async def wait_for(self, pred: Any, timeout: float = 5.0) -> tuple[MqttMessage, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        seen = 0
        while True:
            for m in self.messages[seen:]:
                body = orjson.loads(m.payload)
                if pred(body):
                    return m, body
            seen = len(self.messages)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"no matching message within {timeout} s; got {self.json()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.client.stop()


async def device_client(settings: Settings, device_id: str, password: str, *, receipts: bool = True) -> Collector:
    c = MqttClient(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=f"dev-{device_id}",
        username=device_id,
        password=password,
        name=f"test.{device_id}",
    )
    await c.start()
    if receipts:
        await c.subscribe(topics.device_receipts(device_id), qos=1)
    return Collector(c)


async def platform_client(settings: Settings, *subscriptions: str) -> Collector:
    c = MqttClient(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=f"test-observer-{uuid.uuid4().hex[:8]}",
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        name="test.observer",
    )
    await c.start()
    for s in subscriptions:
        await c.subscribe(s, qos=1)
    return Collector(c)

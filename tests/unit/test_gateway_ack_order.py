"""The gateway acknowledges device messages in the order they arrived, across its batches, even
when Kafka confirms a later batch first (MQTT 4.6; Mosquitto 2.0 relies on it, see
MqttGateway._complete). Pure ordering logic: Kafka's confirmations are plain futures here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from core.settings import Settings
from gateways.mqtt_gateway import MqttGateway


@dataclass
class _Taken:
    receipt_over_mqtt: bool = False


@dataclass
class _Mqtt:
    acked: list[str] = field(default_factory=list)

    def ack(self, msg: Any) -> None:
        self.acked.append(msg)


class _Intake:
    async def confirm(self, producer: Any, taken: Any, fut: asyncio.Future[None]) -> None:
        await fut


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_later_batch_confirmed_first_waits_for_the_batch_before() -> None:
    gw = MqttGateway(Settings(), pool=None)  # type: ignore[arg-type]
    gw.intake = _Intake()  # type: ignore[assignment]
    mqtt = _Mqtt()
    loop = asyncio.get_running_loop()
    f1, f2, f3, f4 = (loop.create_future() for _ in range(4))
    for _ in range(4):
        await gw._in_flight.acquire()
    first = asyncio.create_task(
        gw._complete([("m1", _Taken(), f1), ("m2", _Taken(), f2)], mqtt, None, after=None)  # type: ignore[list-item, arg-type]
    )
    second = asyncio.create_task(
        gw._complete([("m3", _Taken(), f3), ("m4", _Taken(), f4)], mqtt, None, after=first)  # type: ignore[list-item, arg-type]
    )
    f3.set_result(None)
    f4.set_result(None)
    await _settle()
    assert mqtt.acked == []
    f1.set_result(None)
    await _settle()
    assert mqtt.acked == ["m1"]
    f2.set_result(None)
    await asyncio.gather(first, second)
    assert mqtt.acked == ["m1", "m2", "m3", "m4"]
    assert gw._in_flight._value == 5000  # every message's slot given back


async def test_a_batch_cancelled_at_a_stop_does_not_hold_the_next_forever() -> None:
    gw = MqttGateway(Settings(), pool=None)  # type: ignore[arg-type]
    gw.intake = _Intake()  # type: ignore[assignment]
    mqtt = _Mqtt()
    loop = asyncio.get_running_loop()
    f1, f2 = loop.create_future(), loop.create_future()
    for _ in range(2):
        await gw._in_flight.acquire()
    first = asyncio.create_task(gw._complete([("m1", _Taken(), f1)], mqtt, None, after=None))  # type: ignore[list-item, arg-type]
    second = asyncio.create_task(gw._complete([("m2", _Taken(), f2)], mqtt, None, after=first))  # type: ignore[list-item, arg-type]
    f2.set_result(None)
    await _settle()
    first.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    assert mqtt.acked == ["m2"]  # m1 is redelivered by the broker at the next connection
    assert gw._in_flight._value == 5000

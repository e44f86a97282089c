"""The MQTT gateway: device events in, Kafka out, PUBACK only once Kafka holds the event.

A plain persistent subscription to `pingan/v1/devices/+/events` by default (it survives a
Mosquitto restart); with PINGAN_MQTT_SHARED_GROUP set, a shared subscription
(`$share/<group>/...`) spreads devices over any number of gateways. Each gateway keeps a
stable client id and a persistent MQTT 5 session, so events published while it is down, or
received but not yet acknowledged when it died, are delivered to it again. Messages are
validated and handed to the Kafka producer in arrival order (order per device is kept); the
broker's PUBACK and the device's receipt follow when Kafka has acknowledged the record
(acks=all).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import structlog

from core import kafka
from core.lifecycle import Component
from core.mqtt import MqttClient, MqttMessage
from core.platform_mqtt import platform_client
from core.settings import Settings
from core.timeutil import utcnow
from gateways.intake import Intake, Taken
from schemas import topics
from schemas.messages import Ingress, Receipt

log = structlog.get_logger(__name__)

MAX_IN_FLIGHT = 5000
BATCH_MAX = 500


class MqttGateway(Component):
    name = "gateway"

    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any], *, gateway_id: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.gateway_id = gateway_id or f"gw-{settings.instance_id}"
        self.intake = Intake(settings, pool, gateway_id=self.gateway_id, ingress=Ingress.MQTT)
        self.counters = self.intake.counters
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._pending: set[asyncio.Task[None]] = set()
        self._last_batch: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        producer = kafka.IngressProducers(self.settings, client_id=f"pingan-{self.gateway_id}")
        mqtt = platform_client(
            self.settings,
            client_id=f"pingan-{self.gateway_id}",
            name="gateway.mqtt",
            persistent=True,
            manual_ack=True,
        )
        await producer.start()
        await self.intake.start()
        try:
            await mqtt.start()
            try:
                await mqtt.subscribe(
                    topics.shared(topics.DEVICE_EVENTS_FILTER, self.settings.mqtt_shared_group),
                    qos=1,
                )
                log.info("gateway ready", gateway_id=self.gateway_id)
                self.ready.set()
                await self._consume(mqtt, producer)
            finally:
                # Drain: every message already handed to Kafka gets its PUBACK and receipt.
                if self._pending:
                    await asyncio.wait(self._pending, timeout=30)
                await mqtt.stop()
        finally:
            await self.intake.stop()
            await producer.stop()
            log.info("gateway stopped", packet_ids_reused=mqtt.packet_ids_reused, **self.counters.snapshot())

    async def _consume(self, mqtt: MqttClient, producer: kafka.IngressProducers) -> None:
        messages = mqtt.messages().__aiter__()
        stop_wait = asyncio.create_task(self._stop.wait(), name="gateway.stop-wait")
        try:
            while not self.stopping:
                next_msg = asyncio.ensure_future(messages.__anext__())
                done, _ = await asyncio.wait({next_msg, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if next_msg not in done:
                    next_msg.cancel()
                    break
                # What else has arrived is handled with it: one registry query for the batch,
                # and one task that acknowledges the batch as Kafka confirms it.
                batch: list[MqttMessage] = [next_msg.result(), *mqtt.received_nowait(BATCH_MAX - 1)]
                devices = [topics.device_id_from_events_topic(m.topic) for m in batch]
                await self.intake.prefetch(devices)
                handed: list[tuple[MqttMessage, Taken, asyncio.Future[Any]]] = []
                try:
                    for msg, device_id in zip(batch, devices, strict=True):
                        await self._in_flight.acquire()
                        try:
                            given = self._hand_over(msg, device_id, producer)
                            handed.append((msg, *(given if isinstance(given, tuple) else await given)))
                        except BaseException:
                            self._in_flight.release()
                            raise
                finally:
                    if handed:
                        task = asyncio.create_task(
                            self._complete(handed, mqtt, producer, after=self._last_batch), name="gateway.ack"
                        )
                        self._last_batch = task
                        self._pending.add(task)
                        task.add_done_callback(self._pending.discard)
        finally:
            stop_wait.cancel()

    def _hand_over(
        self, msg: MqttMessage, device_id: str | None, producer: kafka.IngressProducers
    ) -> tuple[Taken, asyncio.Future[Any]] | Coroutine[Any, Any, tuple[Taken, asyncio.Future[Any]]]:
        """Validate and hand to Kafka. The common case (a device in the cache, a heartbeat)
        waits for nothing: it is done here, not in a coroutine of its own (a tuple comes back);
        anything else comes back as a coroutine to await."""
        received_at = utcnow()
        taken = self.intake.take_nowait(msg.payload, topic_device=device_id, source=msg.topic, received_at=received_at)
        if taken is not None:
            fut = self.intake.send_nowait(producer, taken)
            if fut is not None:
                return taken, fut
        return self._hand_over_waiting(msg, device_id, producer, taken, received_at)

    async def _hand_over_waiting(
        self,
        msg: MqttMessage,
        device_id: str | None,
        producer: kafka.IngressProducers,
        taken: Taken | None,
        received_at: datetime,
    ) -> tuple[Taken, asyncio.Future[Any]]:
        if taken is None:
            taken = await self.intake.take(
                msg.payload, topic_device=device_id, source=msg.topic, received_at=received_at
            )
        return taken, await self.intake.send(producer, taken)

    async def _complete(
        self,
        handed: list[tuple[MqttMessage, Taken, asyncio.Future[Any]]],
        mqtt: MqttClient,
        producer: kafka.IngressProducers,
        *,
        after: asyncio.Task[None] | None,
    ) -> None:
        """In arrival order, after the batch before (`after`): once Kafka holds a record, and
        only then, the broker may forget the message (PUBACK) and the device gets its receipt.
        (A heartbeat's record lingers in its producer for up to kafka_health_linger_ms: what
        arrived after it is acknowledged that much later, though already in Kafka.)

        Why the order across batches: MQTT asks for it (4.6); Mosquitto 2.0 looks for each
        PUBACK's message from the oldest it sent, so every message acknowledged late is walked
        past by every PUBACK after it; and when it gives a packet id twice (over 65,535 messages
        in flight to one client), a PUBACK makes it forget the oldest message with that id."""
        i = 0
        try:
            for i, (msg, taken, fut) in enumerate(handed):  # noqa: B007 - i is read in finally
                try:
                    if not Intake.confirmed(fut):
                        await self.intake.confirm(producer, taken, fut)
                    if after is not None:
                        await asyncio.wait({after})  # its outcome is its own; only its end counts
                        after = None
                    mqtt.ack(msg)
                    if taken.receipt_over_mqtt:
                        self._send_receipt(mqtt, taken.receipt)
                finally:
                    self._in_flight.release()
        finally:
            for _ in handed[i + 1 :]:  # cancelled mid-way (stopping): the broker redelivers them
                self._in_flight.release()

    def _send_receipt(self, mqtt: MqttClient, receipt: Receipt) -> None:
        """Publish a receipt without waiting for the broker (a lost receipt must not hold up the
        acknowledgement of the events after it, nor stop the gateway)."""

        def failed(exc: BaseException) -> None:
            log.warning(
                "receipt not delivered", device_id=receipt.device_id, event_id=receipt.event_id, error=repr(exc)
            )

        def done(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled() and fut.exception() is not None:
                failed(fut.exception())  # type: ignore[arg-type]

        try:
            fut = mqtt.publish_nowait(topics.device_receipts(receipt.device_id), msgspec.json.encode(receipt), qos=1)
        except Exception as exc:  # noqa: BLE001 - not connected: the receipt is dropped, the event is safe
            failed(exc)
            return
        fut.add_done_callback(done)

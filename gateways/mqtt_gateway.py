"""The MQTT gateway: device events in, Kafka out, PUBACK only once Kafka holds the event.

One shared subscription (`$share/pingan-gateways/pingan/v1/devices/+/events`) spreads devices
over any number of gateways. Each gateway keeps a stable client id and a persistent MQTT 5
session, so events published while it is down, or received but not yet acknowledged when it
died, are delivered to it again. Messages are validated and handed to the Kafka producer in
arrival order (order per device is kept); the broker's PUBACK and the device's receipt follow
when Kafka has acknowledged the record (acks=all).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import structlog

from core import kafka
from core.lifecycle import Component
from core.metrics import Counters
from core.mqtt import MqttClient, MqttMessage
from core.settings import Settings
from core.timeutil import utcnow
from gateways.device_registry import PostgresDeviceLookup
from gateways.validation import ClockLimits, DeviceCache, Rejection, Validator
from schemas import topics
from schemas.events import AnyEvent
from schemas.messages import (
    AcceptedEvent,
    Ingress,
    Receipt,
    ReceiptStatus,
    RejectedInput,
)

log = structlog.get_logger(__name__)

MAX_IN_FLIGHT = 5000
_DLQ_PAYLOAD_CHARS = 8192


class MqttGateway(Component):
    name = "gateway"

    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any], *, gateway_id: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.gateway_id = gateway_id or f"gw-{settings.instance_id}"
        self.topics = kafka.topics(settings)
        self.validator = Validator(
            DeviceCache(PostgresDeviceLookup(pool), ttl_s=settings.device_cache_ttl_s),
            ClockLimits(
                future=_seconds(settings.max_clock_skew_future_s),
                past=_seconds(settings.max_event_age_s),
            ),
        )
        self.counters = Counters("gateway")
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._pending: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        producer = kafka.producer(self.settings, client_id=f"pingan-{self.gateway_id}")
        mqtt = MqttClient(
            host=self.settings.mqtt_host,
            port=self.settings.mqtt_port,
            client_id=f"pingan-{self.gateway_id}",
            username=self.settings.mqtt_username,
            password=self.settings.mqtt_password,
            clean_start=False,
            session_expiry=self.settings.mqtt_session_expiry_s,
            manual_ack=True,
            name="gateway.mqtt",
        )
        await producer.start()
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
            await producer.stop()
            log.info("gateway stopped", **self.counters.snapshot())

    async def _consume(self, mqtt: MqttClient, producer: Any) -> None:
        messages = mqtt.messages().__aiter__()
        stop_wait = asyncio.create_task(self._stop.wait(), name="gateway.stop-wait")
        try:
            while not self.stopping:
                next_msg = asyncio.ensure_future(messages.__anext__())
                done, _ = await asyncio.wait({next_msg, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if next_msg not in done:
                    next_msg.cancel()
                    break
                msg: MqttMessage = next_msg.result()
                await self._in_flight.acquire()
                try:
                    await self._handle(msg, mqtt, producer)
                except BaseException:
                    self._in_flight.release()
                    raise
        finally:
            stop_wait.cancel()

    async def _handle(self, msg: MqttMessage, mqtt: MqttClient, producer: Any) -> None:
        received_at = utcnow()
        topic_device = topics.device_id_from_events_topic(msg.topic)
        result = await self.validator.validate(
            msg.payload,
            topic_device_id=topic_device,
            now=received_at,
            now_monotonic=time.monotonic(),
        )
        if isinstance(result, Rejection):
            record = self._rejected_record(msg, result, received_at)
            key = (result.device_id or "").encode() or None
            fut = await producer.send(self.topics.alarm_events_dlq, record, key=key)
            receipt = Receipt(
                status=ReceiptStatus.REJECTED,
                device_id=topic_device or "",
                at=received_at,
                event_id=result.event_id,
                reason=result.reason,
                detail=result.detail,
            )
            self.counters.inc("rejected")
            self.counters.inc(f"rejected.{result.reason.value}")
            log.info(
                "event rejected",
                reason=result.reason.value,
                detail=result.detail,
                device_id=topic_device,
                event_id=result.event_id,
            )
            task_name = "gateway.dlq-ack"
            kafka_topic = self.topics.alarm_events_dlq
        else:
            record = msgspec.json.encode(
                AcceptedEvent(
                    event=result,  # type: ignore[arg-type]
                    received_at=received_at,
                    ingress=Ingress.MQTT,
                    gateway_id=self.gateway_id,
                )
            )
            key = result.device_id.encode()
            fut = await producer.send(self.topics.alarm_events, record, key=key)
            receipt = Receipt(
                status=ReceiptStatus.ACCEPTED,
                device_id=result.device_id,
                at=received_at,
                event_id=result.event_id,
            )
            self.counters.inc("accepted")
            task_name = "gateway.ack"
            kafka_topic = self.topics.alarm_events
        task = asyncio.create_task(
            self._complete(msg, mqtt, producer, fut, kafka_topic, key, record, receipt, result),
            name=task_name,
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _complete(
        self,
        msg: MqttMessage,
        mqtt: MqttClient,
        producer: Any,
        fut: asyncio.Future[Any],
        kafka_topic: str,
        key: bytes | None,
        record: bytes,
        receipt: Receipt,
        result: AnyEvent | Rejection,
    ) -> None:
        try:
            delay = 0.2
            while True:
                try:
                    await fut
                    break
                except Exception as exc:  # noqa: BLE001 - Kafka gave up; keep the event, try again
                    log.warning(
                        "kafka send failed, retrying",
                        error=repr(exc),
                        topic=kafka_topic,
                        device_id=receipt.device_id,
                        event_id=receipt.event_id,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    fut = await producer.send(kafka_topic, record, key=key)
            # Kafka holds the record: now, and only now, the broker may forget the message.
            mqtt.ack(msg)
            if receipt.device_id:
                await self._send_receipt(mqtt, receipt)
        finally:
            self._in_flight.release()

    async def _send_receipt(self, mqtt: MqttClient, receipt: Receipt) -> None:
        try:
            await mqtt.publish(
                topics.device_receipts(receipt.device_id),
                msgspec.json.encode(receipt),
                qos=1,
                timeout=10,
            )
        except Exception as exc:  # noqa: BLE001 - a lost receipt must not stop the gateway
            log.warning(
                "receipt not delivered",
                device_id=receipt.device_id,
                event_id=receipt.event_id,
                error=repr(exc),
            )

    def _rejected_record(self, msg: MqttMessage, rej: Rejection, received_at: datetime) -> bytes:
        return msgspec.json.encode(
            RejectedInput(
                reason=rej.reason,
                detail=rej.detail,
                received_at=received_at,
                ingress=Ingress.MQTT,
                gateway_id=self.gateway_id,
                topic=msg.topic,
                device_id=rej.device_id,
                event_id=rej.event_id,
                payload=msg.payload[:_DLQ_PAYLOAD_CHARS].decode("utf-8", errors="replace"),
                payload_bytes=len(msg.payload),
            )
        )


def _seconds(n: int) -> timedelta:
    return timedelta(seconds=n)

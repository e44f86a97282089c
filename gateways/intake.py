"""What every ingress does with one input: validate it, turn it into a Kafka record (accepted
events to `pingan.alarm-events`, refusals to the dead-letter topic with their reason), hand it
to the producer, and wait until Kafka holds it (retrying for as long as it takes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import structlog

from core import kafka
from core.kafka import IngressProducers
from core.metrics import Counters
from core.pg_errors import is_transient
from core.pg_wakeup import Wakeup
from core.settings import Settings
from gateways.device_mirror import DeviceMirror
from gateways.device_registry import PostgresDeviceLookup
from gateways.rate_limit import DeviceRateLimiter
from gateways.validation import ClockLimits, DeviceCache, Rejection, Validator, clock_offset
from schemas.events import AnyEvent
from schemas.messages import AcceptedEvent, Ingress, Receipt, ReceiptStatus, RejectedInput, RejectReason

log = structlog.get_logger(__name__)

_DLQ_PAYLOAD_CHARS = 8192


@dataclass(slots=True)
class Taken:
    """One input, ready for Kafka: its record, where it goes, and the device's receipt."""

    kafka_topic: str
    key: bytes | None
    record: bytes
    receipt: Receipt
    result: AnyEvent | Rejection

    @property
    def accepted(self) -> bool:
        return not isinstance(self.result, Rejection)

    @property
    def receipt_over_mqtt(self) -> bool:
        """Whether an MQTT device gets this receipt. Every refusal and every event that matters
        does; an accepted heartbeat does not (the broker's PUBACK says enough, and at tens of
        thousands a second the receipts would double the broker's traffic)."""
        if not self.receipt.device_id:
            return False
        if not self.accepted or self.receipt.detail:  # a refusal, or a warning (the device's clock)
            return True
        return not self.heartbeat

    @property
    def heartbeat(self) -> bool:
        """An accepted heartbeat: it goes by the gateway's lingering producer."""
        return getattr(self.result, "type", None) == "device.heartbeat"


class Intake:
    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any], *, gateway_id: str, ingress: Ingress) -> None:
        self.settings = settings
        self.gateway_id = gateway_id
        self.ingress = ingress
        self.topics = kafka.topics(settings)
        registry = PostgresDeviceLookup(pool)
        self.validator = Validator(DeviceCache(registry, ttl_s=settings.device_cache_ttl_s))
        # The whole registry in the cache, read again before its entries run out.
        self.mirror = (
            DeviceMirror(self.validator.devices, registry, refresh_s=0.8 * settings.device_cache_ttl_s)
            if settings.device_mirror
            else None
        )
        self._mirror_task: asyncio.Task[None] | None = None
        self.clock = ClockLimits(
            future=timedelta(seconds=settings.max_clock_skew_future_s),
            past=timedelta(seconds=settings.max_event_age_s),
        )
        self._clock_window = self.clock.window_s
        self.limiter = DeviceRateLimiter(
            rate_per_s=settings.device_rate_per_s,
            burst=settings.device_burst,
            alarm_interval_s=settings.alarm_min_interval_s,
        )
        self.counters = Counters("gateway" if ingress is Ingress.MQTT else "ingest")
        # Told by Postgres when a device is deactivated (or changed): its cached lookup goes.
        self.on_device_change: list[Callable[[str | None], None]] = [self._forget_device]
        self._changes = Wakeup(settings.database_url, "pingan_devices", on_payload=self._device_changed)

    async def start(self) -> None:
        await self._changes.start()  # before the first read: no change is missed
        if self.mirror is not None:
            self._mirror_task = asyncio.create_task(self.mirror.run(), name="intake.device-mirror")

    async def stop(self) -> None:
        if self._mirror_task is not None:
            self._mirror_task.cancel()
            await asyncio.gather(self._mirror_task, return_exceptions=True)
            self._mirror_task = None
        await self._changes.stop()

    def _device_changed(self, device_id: str | None) -> None:
        for fn in self.on_device_change:
            fn(device_id)

    def _forget_device(self, device_id: str | None) -> None:
        if device_id is None:
            self.validator.devices.clear()
        else:
            self.validator.devices.forget(device_id)
        if self.mirror is not None:
            self.mirror.changed(device_id)

    async def prefetch(self, device_ids: list[str | None]) -> None:
        """Warm the device cache for a batch of inputs with one registry query."""
        wanted = [d for d in device_ids if d]
        delay = 0.1
        while wanted:
            try:
                await self.validator.devices.prefetch(wanted, time.monotonic())
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("device lookup failed, retrying", error=repr(exc), devices=len(wanted))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def take(
        self, payload: bytes, *, topic_device: str | None, source: str | None, received_at: datetime
    ) -> Taken:
        delay = 0.1
        result: AnyEvent | Rejection
        while True:
            try:
                result = await self.validator.validate(
                    payload, topic_device_id=topic_device, now_monotonic=time.monotonic()
                )
                break
            except Exception as exc:
                # The device registry (Postgres) is briefly away: the event waits (unacknowledged,
                # so the broker keeps it) rather than being refused or the gateway dying.
                if not is_transient(exc):
                    # Never let one input stop the gateway (it would come back and stop it
                    # again): refuse it with its reason, and say so loudly.
                    log.exception("input could not be checked", device_id=topic_device)
                    result = Rejection(
                        RejectReason.UNPROCESSABLE,
                        f"the gateway could not check this input: {type(exc).__name__}",
                        topic_device,
                    )
                    break
                log.warning("device lookup failed, retrying", error=repr(exc), device_id=topic_device)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        return self._taken(result, payload, topic_device, source, received_at)

    def take_nowait(
        self, payload: bytes, *, topic_device: str | None, source: str | None, received_at: datetime
    ) -> Taken | None:
        """`take` when the device registry need not be asked (the device's entry is in the
        cache, as `prefetch` leaves it): no waiting, no task switch. None otherwise: then
        `take` is the way."""
        result = self.validator.validate_cached(payload, topic_device_id=topic_device, now_monotonic=time.monotonic())
        if result is None:
            return None
        return self._taken(result, payload, topic_device, source, received_at)

    def _taken(
        self,
        result: AnyEvent | Rejection,
        payload: bytes,
        topic_device: str | None,
        source: str | None,
        received_at: datetime,
    ) -> Taken:
        if not isinstance(result, Rejection) and not self.limiter.admit(
            result.device_id, result.type, type(result).category, time.monotonic()
        ):
            result = Rejection(
                RejectReason.RATE_LIMITED,
                f"device {result.device_id} sent more than {self.limiter.rate:g} events/s "
                f"(burst {self.limiter.burst:g}); {result.type} refused",
                result.device_id,
                result.event_id,
            )
        if isinstance(result, Rejection):
            self.counters.inc("rejected")
            self.counters.inc(f"rejected.{result.reason.value}")
            # A flooding device would flood the log too: its refusals are counted, logged at debug.
            (log.debug if result.reason is RejectReason.RATE_LIMITED else log.info)(
                "event rejected",
                ingress=self.ingress.value,
                reason=result.reason.value,
                detail=result.detail,
                device_id=topic_device,
                event_id=result.event_id,
            )
            record = msgspec.json.encode(
                RejectedInput(
                    reason=result.reason,
                    detail=result.detail,
                    received_at=received_at,
                    ingress=self.ingress,
                    gateway_id=self.gateway_id,
                    topic=source,
                    device_id=result.device_id,
                    event_id=result.event_id,
                    payload=payload[:_DLQ_PAYLOAD_CHARS].decode("utf-8", errors="replace"),
                    payload_bytes=len(payload),
                )
            )
            receipt = Receipt(
                status=ReceiptStatus.REJECTED,
                device_id=topic_device or "",
                at=received_at,
                event_id=result.event_id,
                reason=result.reason,
                detail=result.detail,
            )
            key = (result.device_id or "").encode() or None
            return Taken(self.topics.alarm_events_dlq, key, record, receipt, result)
        self.counters.inc("accepted")
        offset = clock_offset(result, received_at, self.clock, self._clock_window)
        warning = None
        if offset is not None:
            self.counters.inc("clock_skewed")
            warning = (
                f"occurred_at {result.occurred_at.isoformat()} is {abs(offset):.0f} s "
                f"{'ahead of' if offset > 0 else 'behind'} the platform clock; recorded with the time it was received"
            )
            log.info("device clock off", device_id=result.device_id, event_id=result.event_id, offset_s=offset)
        record = msgspec.json.encode(
            AcceptedEvent(
                event=result,  # type: ignore[arg-type]
                received_at=received_at,
                ingress=self.ingress,
                gateway_id=self.gateway_id,
                clock_offset_s=offset,
            )
        )
        receipt = Receipt(
            status=ReceiptStatus.ACCEPTED,
            device_id=result.device_id,
            at=received_at,
            event_id=result.event_id,
            detail=warning,
        )
        return Taken(self.topics.alarm_events, result.device_id.encode(), record, receipt, result)

    @staticmethod
    async def send(producers: IngressProducers, taken: Taken) -> asyncio.Future[Any]:
        """Hand the record to its producer (in arrival order: the order of a device's events is
        kept, apart from heartbeats, which go in batches; see IngressProducers)."""
        return Intake.send_nowait(producers, taken) or await Intake.send_one(producers, taken)

    @staticmethod
    def send_nowait(producers: IngressProducers, taken: Taken) -> asyncio.Future[Any] | None:
        """`send` of a heartbeat: into the batch being gathered, without waiting. None for
        anything else (then `send` is the way)."""
        if taken.heartbeat and taken.key is not None and producers.heartbeats.running:
            return producers.heartbeats.send(taken.kafka_topic, taken.key, taken.record)
        return None

    @staticmethod
    async def send_one(producers: IngressProducers, taken: Taken) -> asyncio.Future[Any]:
        producer = producers.of(health=taken.heartbeat)
        fut: asyncio.Future[Any] = await producer.send(taken.kafka_topic, taken.record, key=taken.key)
        return fut

    @staticmethod
    def confirmed(fut: asyncio.Future[Any]) -> bool:
        """Whether Kafka already holds the record of `fut` (then `confirm` has nothing to do)."""
        return fut.done() and not fut.cancelled() and fut.exception() is None

    async def confirm(self, producers: IngressProducers, taken: Taken, fut: asyncio.Future[Any]) -> None:
        """Return once Kafka holds the record (acks=all); if the producer gives up, send again."""
        delay = 0.2
        while True:
            try:
                await fut
                return
            except Exception as exc:  # noqa: BLE001 - Kafka gave up; keep the event, try again
                log.warning(
                    "kafka send failed, retrying",
                    error=repr(exc),
                    topic=taken.kafka_topic,
                    device_id=taken.receipt.device_id,
                    event_id=taken.receipt.event_id,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                fut = await self.send_one(producers, taken)

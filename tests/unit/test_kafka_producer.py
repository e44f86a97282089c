"""core.kafka.Producer replaces its aiokafka producer when the broker refuses its state."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    NotLeaderForPartitionError,
    OutOfOrderSequenceNumber,
    UnknownTopicOrPartitionError,
)

from core import kafka
from core.settings import Settings


class FakeProducer:
    made: ClassVar[list[FakeProducer]] = []
    fail_starts = 0

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.fail_with: BaseException | None = None
        self.refuse_with: BaseException | None = None
        self.stopped = False
        FakeProducer.made.append(self)

    async def start(self) -> None:
        if FakeProducer.fail_starts:
            FakeProducer.fail_starts -= 1
            raise KafkaConnectionError("not yet")

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[Any]:
        if self.refuse_with is not None:
            raise self.refuse_with
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self.fail_with is not None:  # the broker answers a moment later
            loop.call_soon(fut.set_exception, self.fail_with)
        else:
            self.sent.append(value)
            loop.call_soon(fut.set_result, None)
        return fut


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> list[FakeProducer]:
    FakeProducer.made = []
    FakeProducer.fail_starts = 0
    monkeypatch.setattr(kafka, "_aiokafka_producer", lambda settings, client_id: FakeProducer())
    return FakeProducer.made


async def test_out_of_order_sequence_starts_a_new_producer(fakes: list[FakeProducer]) -> None:
    p = kafka.producer(Settings(), client_id="t")
    await p.start()
    fakes[0].fail_with = OutOfOrderSequenceNumber()
    with pytest.raises(OutOfOrderSequenceNumber):
        await p.send_and_wait("topic", b"a")
    await p.send_and_wait("topic", b"b")  # waits for the new producer
    assert len(fakes) == 2 and fakes[1].sent == [b"b"]
    assert p.renewals == 1
    await asyncio.sleep(0)
    assert fakes[0].stopped
    await p.stop()


async def test_an_ordinary_failure_keeps_the_producer(fakes: list[FakeProducer]) -> None:
    p = kafka.producer(Settings(), client_id="t")
    await p.start()
    fakes[0].fail_with = NotLeaderForPartitionError()
    with pytest.raises(NotLeaderForPartitionError):
        await p.send_and_wait("topic", b"a")
    fakes[0].fail_with = None
    await p.send_and_wait("topic", b"b")
    assert len(fakes) == 1 and p.renewals == 0
    await p.stop()


async def test_the_new_producer_is_retried_until_it_starts(fakes: list[FakeProducer]) -> None:
    p = kafka.producer(Settings(), client_id="t")
    await p.start()
    fakes[0].fail_with = OutOfOrderSequenceNumber()
    FakeProducer.fail_starts = 1  # Kafka not reachable for the first new one
    with pytest.raises(OutOfOrderSequenceNumber):
        await p.send_and_wait("topic", b"a")
    await p.send_and_wait("topic", b"b")
    assert len(fakes) == 3 and fakes[2].sent == [b"b"] and p.renewals == 1
    await p.stop()


async def test_a_record_kafka_would_not_take_is_a_failed_delivery(fakes: list[FakeProducer]) -> None:
    p = kafka.producer(Settings(), client_id="t")
    await p.start()
    fakes[0].refuse_with = UnknownTopicOrPartitionError()  # no metadata within the request timeout
    fut = await p.send("topic", b"a")  # no exception here: the caller retries a failed delivery
    with pytest.raises(UnknownTopicOrPartitionError):
        await fut
    fakes[0].refuse_with = None
    await p.send_and_wait("topic", b"b")
    assert fakes[0].sent == [b"b"] and p.renewals == 0
    await p.stop()


def test_cached_partitioner_places_keys_as_the_default_one() -> None:
    """Order per device rests on a key always going to the same partition, the one the Java
    client and aiokafka's DefaultPartitioner choose."""
    from aiokafka.partitioner import DefaultPartitioner

    default, cached = DefaultPartitioner(), kafka.CachedKeyPartitioner()
    keys = [f"dev-{i}".encode() for i in range(500)] + [b"", b"\x00\xff", "网格-1".encode()]
    for n in (1, 3, 12):
        parts = list(range(n))
        for _ in range(2):  # the second pass is served from the cache
            assert [cached(k, parts, parts) for k in keys] == [default(k, parts, parts) for k in keys]
    # murmur2 of a known key, as the Java client computes it
    assert cached(b"21", list(range(1000)), []) == (-973932308 & 0x7FFFFFFF) % 1000
    assert cached(None, [0, 1, 2], [1]) == 1


async def test_a_gateway_sends_accepted_heartbeats_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from gateways.intake import Intake, Taken
    from gateways.validation import Rejection
    from schemas.events import HeartbeatEvent, PanicAlarm
    from schemas.messages import Receipt, ReceiptStatus, RejectReason

    lingers: dict[str, int] = {}

    def made(settings: Settings, client_id: str) -> FakeProducer:
        lingers[client_id] = settings.kafka_linger_ms
        return FakeProducer()

    monkeypatch.setattr(kafka, "_aiokafka_producer", made)
    producers = kafka.IngressProducers(Settings(kafka_linger_ms=0, kafka_health_linger_ms=15), client_id="gw")
    await producers.start()
    assert lingers == {"gw": 0, "gw-health": 0}  # heartbeats linger in producers.heartbeats
    handed: list[bytes] = []

    def gathered(topic: str, key: bytes, value: bytes) -> asyncio.Future[None]:
        handed.append(value)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    monkeypatch.setattr(producers.heartbeats, "send", gathered)
    now = datetime.now(UTC)

    def taken(result: Any, record: bytes) -> Taken:
        receipt = Receipt(status=ReceiptStatus.ACCEPTED, device_id="d-1", at=now)
        return Taken("pingan.alarm-events", b"d-1", record, receipt, result)

    fields = {"event_id": "e", "device_id": "d-1", "occurred_at": now, "seq": 1}
    for t in (
        taken(HeartbeatEvent(**fields), b"heartbeat"),
        taken(PanicAlarm(**fields), b"panic"),
        taken(Rejection(RejectReason.MALFORMED, "not valid JSON", "d-1"), b"rejected"),
    ):
        await Intake.send(producers, t)
    assert handed == [b"heartbeat"]
    assert producers.health._current.sent == []  # type: ignore[union-attr]
    assert producers.urgent._current.sent == [b"panic", b"rejected"]  # type: ignore[union-attr]
    # once the batches stop (the gateway stopping), a heartbeat goes record by record
    await producers.heartbeats.stop()
    await Intake.send(producers, taken(HeartbeatEvent(**fields), b"heartbeat, late"))
    assert producers.health._current.sent == [b"heartbeat, late"]  # type: ignore[union-attr]
    await producers.stop()
    assert all(f.stopped for f in FakeProducer.made[-2:])

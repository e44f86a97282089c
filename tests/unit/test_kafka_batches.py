"""core.kafka_batches: records gathered and handed to Kafka a batch per partition (pure logic:
the aiokafka producer under core.kafka.Producer is a fake here; tests/integration has the
real broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, NotLeaderForPartitionError, OutOfOrderSequenceNumber

from core import kafka
from core.kafka_batches import BatchedSends
from core.settings import Settings


class FakeBatch:
    def __init__(self, room: int) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.room = room

    def append(self, *, key: bytes, value: bytes, timestamp: Any) -> object | None:
        if len(self.records) == self.room:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeBatchProducer:
    """What core.kafka.Producer uses of aiokafka for batches."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int, list[tuple[bytes, bytes]]]] = []
        self.acks: list[asyncio.Future[Any]] = []
        self.room = 1000
        self.refuse: BaseException | None = None
        self.answer_at_once = True

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.room)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        if self.refuse is not None:
            raise self.refuse
        self.batches.append((topic, partition, batch.records))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.answer_at_once:
            fut.set_result(None)
        self.acks.append(fut)
        return fut


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeBatchProducer:
    made = FakeBatchProducer()
    monkeypatch.setattr(kafka, "_aiokafka_producer", lambda settings, client_id: made)
    return made


async def _started(linger_s: float = 0.01) -> tuple[kafka.Producer, BatchedSends]:
    producer = kafka.producer(Settings(), client_id="t")
    await producer.start()
    sends = BatchedSends(producer, linger_s=linger_s)
    await sends.start()
    return producer, sends


def _partition(key: bytes) -> int:
    return kafka.CachedKeyPartitioner()(key, [0, 1, 2], [0, 1, 2])


async def test_records_go_one_batch_per_partition_on_the_keys_partition_in_order(fake: FakeBatchProducer) -> None:
    producer, sends = await _started()
    keys = [f"dev-{i % 7}".encode() for i in range(60)]
    futs = [sends.send("t.events", k, b"%d" % i) for i, k in enumerate(keys)]
    assert len(set(map(id, futs))) == 1  # one delivery for the records gathered together
    await asyncio.wait_for(futs[0], 1)
    assert sorted(p for _, p, _ in fake.batches) == sorted({_partition(k) for k in keys})
    for topic, partition, records in fake.batches:
        assert topic == "t.events"
        assert all(_partition(k) == partition for k, _ in records)
        sent = [int(v) for _, v in records]
        assert sent == sorted(sent)  # in the order of the send calls
    assert sum(len(r) for *_, r in fake.batches) == 60
    later = sends.send("t.events", b"dev-1", b"60")
    assert later is not futs[0]  # the next records make the next delivery
    await asyncio.wait_for(later, 1)
    await sends.stop()
    await producer.stop()


async def test_a_full_batch_continues_in_another_and_the_delivery_waits_for_all(fake: FakeBatchProducer) -> None:
    fake.room, fake.answer_at_once = 3, False
    producer, sends = await _started()
    fut = None
    for i in range(7):
        fut = sends.send("t", b"same-device", b"%d" % i)
    assert fut is not None
    while len(fake.acks) < 3:
        await asyncio.sleep(0.005)
    assert [len(r) for *_, r in fake.batches] == [3, 3, 1]
    fake.acks[0].set_result(None)
    fake.acks[2].set_result(None)
    await asyncio.sleep(0.01)
    assert not fut.done()  # the middle batch is not acknowledged yet
    fake.acks[1].set_result(None)
    await asyncio.wait_for(fut, 1)
    await sends.stop()
    await producer.stop()


async def test_a_failed_batch_fails_the_delivery_and_the_next_records_go_on(fake: FakeBatchProducer) -> None:
    fake.answer_at_once = False
    producer, sends = await _started()
    first = sends.send("t", b"a", b"1")
    second_key = next(f"k{i}".encode() for i in range(100) if _partition(f"k{i}".encode()) != _partition(b"a"))
    sends.send("t", second_key, b"2")
    while len(fake.acks) < 2:
        await asyncio.sleep(0.005)
    fake.acks[0].set_exception(NotLeaderForPartitionError())
    fake.acks[1].set_result(None)
    with pytest.raises(NotLeaderForPartitionError):
        await asyncio.wait_for(first, 1)
    fake.answer_at_once = True
    await asyncio.wait_for(sends.send("t", b"a", b"3"), 1)
    await sends.stop()
    await producer.stop()


async def test_a_batch_kafka_would_not_take_fails_the_delivery(fake: FakeBatchProducer) -> None:
    producer, sends = await _started()
    fake.refuse = KafkaTimeoutError()
    with pytest.raises(KafkaTimeoutError):
        await asyncio.wait_for(sends.send("t", b"a", b"1"), 1)
    fake.refuse = None
    await asyncio.wait_for(sends.send("t", b"a", b"2"), 1)
    await sends.stop()
    await producer.stop()


async def test_a_refused_producer_state_starts_a_new_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeBatchProducer] = []

    def new(settings: Settings, client_id: str) -> FakeBatchProducer:
        made.append(FakeBatchProducer())
        made[-1].answer_at_once = len(made) > 1
        return made[-1]

    monkeypatch.setattr(kafka, "_aiokafka_producer", new)
    producer, sends = await _started()
    fut = sends.send("t", b"a", b"1")
    while not made[0].acks:
        await asyncio.sleep(0.005)
    made[0].acks[0].set_exception(OutOfOrderSequenceNumber())
    with pytest.raises(OutOfOrderSequenceNumber):
        await asyncio.wait_for(fut, 1)
    await asyncio.wait_for(sends.send("t", b"a", b"2"), 1)
    assert len(made) == 2 and [r for *_, r in made[1].batches] == [[(b"a", b"2")]]
    assert producer.renewals == 1
    await sends.stop()
    await producer.stop()


async def test_stop_sends_what_is_queued_and_then_refuses(fake: FakeBatchProducer) -> None:
    producer, sends = await _started(linger_s=5.0)  # a stop does not wait out the linger
    fut = sends.send("t", b"a", b"1")
    await asyncio.wait_for(sends.stop(), 1)
    await asyncio.wait_for(fut, 1)
    assert [r for *_, r in fake.batches] == [[(b"a", b"1")]]
    assert not sends.running
    with pytest.raises(RuntimeError):
        sends.send("t", b"a", b"2")
    await producer.stop()


async def test_what_comes_while_a_delivery_is_out_goes_whole_in_the_next(fake: FakeBatchProducer) -> None:
    """One delivery in flight: aiokafka sends one batch per partition per request, so a batch
    a linger would queue behind the one still out; the records wait and go together."""
    fake.answer_at_once = False
    producer, sends = await _started(linger_s=0.005)
    first = sends.send("t", b"a", b"1")
    while len(fake.acks) < 1:
        await asyncio.sleep(0.002)
    later = [sends.send("t", b"a", b"%d" % i) for i in range(2, 6)]
    await asyncio.sleep(0.03)  # several lingers
    assert len(fake.batches) == 1  # nothing more while the first is unacknowledged
    sends.send("t", b"a", b"6")
    fake.acks[0].set_result(None)
    await asyncio.wait_for(first, 1)
    while len(fake.acks) < 2:
        await asyncio.sleep(0.002)
    assert [r for *_, r in fake.batches] == [[(b"a", b"1")], [(b"a", b"%d" % i) for i in range(2, 7)]]
    assert not later[0].done()
    fake.acks[1].set_result(None)
    await asyncio.wait_for(asyncio.gather(*later), 1)
    await sends.stop()
    await producer.stop()


async def test_a_failed_delivery_does_not_hold_the_next(fake: FakeBatchProducer) -> None:
    fake.answer_at_once = False
    producer, sends = await _started(linger_s=0.005)
    first = sends.send("t", b"a", b"1")
    while len(fake.acks) < 1:
        await asyncio.sleep(0.002)
    second = sends.send("t", b"a", b"2")
    fake.acks[0].set_exception(NotLeaderForPartitionError())
    with pytest.raises(NotLeaderForPartitionError):
        await asyncio.wait_for(first, 1)
    while len(fake.acks) < 2:
        await asyncio.sleep(0.002)
    fake.acks[1].set_result(None)
    await asyncio.wait_for(second, 1)
    await sends.stop()
    await producer.stop()

"""Kafka plumbing: producers and consumers set for the alarm path, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    TopicAlreadyExistsError,
    UnknownProducerId,
)
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.protocol.admin import DeleteGroupsRequest

from core.kafka_batches import BatchedSends
from core.settings import Settings
from schemas.topics import KafkaTopics

log = structlog.get_logger(__name__)


def topics(settings: Settings) -> KafkaTopics:
    return KafkaTopics(prefix=settings.kafka_topic_prefix)


# The broker no longer accepts the producer's idempotence state (producer id, epoch, sequence
# numbers): nothing this producer sends will be accepted again.
_STATE_LOST = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)


class Producer:
    """An idempotent producer (see `_aiokafka_producer`) that replaces itself when the broker
    no longer accepts its state.

    aiokafka gives a sequence number to a batch it then expires unsent (a partition without a
    leader for longer than the request timeout, as while a broker restarts); the broker then
    refuses every later batch of that producer as out of order, for ever, and every retry of
    the caller takes a new number further on. A send that fails so starts a new producer (a
    new producer id, sequences from zero) for the sends that follow; the failed send's caller
    sends again, as after any failure (the event id makes a repeat harmless)."""

    def __init__(self, settings: Settings, *, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._current: AIOKafkaProducer | None = None
        self._renewing: asyncio.Task[None] | None = None
        self._stopped = False
        self.renewals = 0

    async def start(self) -> None:
        self._current = _aiokafka_producer(self._settings, client_id=self._client_id)
        await self._current.start()

    async def stop(self) -> None:
        self._stopped = True
        if self._renewing is not None:
            self._renewing.cancel()
            await asyncio.gather(self._renewing, return_exceptions=True)
        if self._current is not None:
            await self._current.stop()

    async def send(self, topic: str, value: bytes, *, key: bytes | None = None) -> asyncio.Future[Any]:
        """Hand a record to the producer; returns the future of its acknowledgement. A failure
        to hand it over (no metadata for the topic within the request timeout, as while the
        cluster elects new leaders) is that future's outcome too, never an exception here:
        the caller's retry of a failed delivery covers it."""
        if self._renewing is not None:
            await asyncio.shield(self._renewing)
        current = self._current
        assert current is not None, "producer not started"
        try:
            fut: asyncio.Future[Any] = await current.send(topic, value, key=key)
        except KafkaError as exc:
            return _failed(exc)
        fut.add_done_callback(lambda f: self._check(f, current))
        return fut

    async def send_batches(self, records: list[tuple[str, bytes, bytes]]) -> list[asyncio.Future[Any]]:
        """Hand (topic, key, value) records to Kafka as one batch per partition (more where one
        fills up), each partition's records in their order, on the partition `send` would pick
        for the key; returns the futures of the batches' acknowledgements. A failure to hand a
        batch over is its future's outcome, as in `send`."""
        if self._renewing is not None:
            await asyncio.shield(self._renewing)
        current = self._current
        assert current is not None, "producer not started"
        by_partition: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
        partitions: dict[str, list[int]] = {}
        for topic, key, value in records:
            if topic not in partitions:
                try:
                    partitions[topic] = list(await current.partitions_for(topic))
                except KafkaError as exc:
                    return [_failed(exc)]
            of_topic = partitions[topic]
            by_partition.setdefault((topic, of_topic[_key_hash(key) % len(of_topic)]), []).append((key, value))
        acks: list[asyncio.Future[Any]] = []
        for (topic, partition), recs in by_partition.items():
            acks.extend(await self._send_partition(current, topic, partition, recs))
        return acks

    async def _send_partition(
        self, current: AIOKafkaProducer, topic: str, partition: int, records: list[tuple[bytes, bytes]]
    ) -> list[asyncio.Future[Any]]:
        acks: list[asyncio.Future[Any]] = []
        batch = current.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                acks.append(await self._send_batch(current, batch, topic, partition))
                batch = current.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    acks.append(_failed(MessageSizeTooLargeError(f"a record of {len(value)} bytes")))
                    batch = current.create_batch()
        if batch.record_count():
            acks.append(await self._send_batch(current, batch, topic, partition))
        return acks

    async def _send_batch(
        self, current: AIOKafkaProducer, batch: Any, topic: str, partition: int
    ) -> asyncio.Future[Any]:
        try:
            fut: asyncio.Future[Any] = await current.send_batch(batch, topic, partition=partition)
        except KafkaError as exc:
            return _failed(exc)
        fut.add_done_callback(lambda f: self._check(f, current))
        return fut

    async def send_and_wait(self, topic: str, value: bytes, *, key: bytes | None = None) -> Any:
        return await (await self.send(topic, value, key=key))

    def _check(self, fut: asyncio.Future[Any], sender: AIOKafkaProducer) -> None:
        if fut.cancelled() or not isinstance(fut.exception(), _STATE_LOST):
            return
        if sender is self._current and self._renewing is None and not self._stopped:
            log.warning(
                "kafka producer state refused by the broker, starting a new producer", error=repr(fut.exception())
            )
            self._renewing = asyncio.get_running_loop().create_task(self._renew(sender))

    async def _renew(self, old: AIOKafkaProducer) -> None:
        delay = 0.5
        try:
            while True:
                new = _aiokafka_producer(self._settings, client_id=self._client_id)
                try:
                    await new.start()
                    break
                except KafkaError as exc:
                    log.warning("new kafka producer not started yet, retrying", error=repr(exc))
                    with contextlib.suppress(Exception):
                        await new.stop()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            self._current = new
            self.renewals += 1
        finally:
            self._renewing = None
        # The old one's batches fail (the broker refuses them); their callers send them again.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.stop(), self._settings.kafka_request_timeout_ms / 1000)


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_exception(exc)
    return fut


def producer(settings: Settings, *, client_id: str) -> Producer:
    """The producer of the components: see `Producer`."""
    return Producer(settings, client_id=client_id)


class IngressProducers:
    """A gateway's two producers. `urgent` (kafka_linger_ms) takes everything that must leave at
    once: alarms, cancels, maintenance events, rejections. `health` takes accepted heartbeats,
    which are many and urgent to nobody: `heartbeats` gathers them for kafka_health_linger_ms
    and hands them over a batch per partition (see core.kafka_batches); a heartbeat whose
    batch failed goes again by `health.send`. A device's heartbeat may reach its partition
    after an alarm the device sent later: what a heartbeat records (last seen, battery,
    sequence) is kept by sequence, not by arrival."""

    def __init__(self, settings: Settings, *, client_id: str) -> None:
        self.urgent = Producer(settings, client_id=client_id)
        self.health = Producer(settings, client_id=f"{client_id}-health")
        self.heartbeats = BatchedSends(self.health, linger_s=settings.kafka_health_linger_ms / 1000)

    def of(self, health: bool) -> Producer:
        return self.health if health else self.urgent

    async def start(self) -> None:
        await self.urgent.start()
        try:
            await self.health.start()
        except BaseException:
            await self.urgent.stop()
            raise
        await self.heartbeats.start()

    async def stop(self) -> None:
        try:
            await self.heartbeats.stop()
        finally:
            try:
                await self.health.stop()
            finally:
                await self.urgent.stop()


@functools.lru_cache(maxsize=1 << 16)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


class CachedKeyPartitioner:
    """The partitions of aiokafka's DefaultPartitioner (murmur2 of the key, as the Java client
    does), with the hash of recent keys kept: aiokafka's murmur2 is pure Python, and the same
    device ids and incident ids come back again and again (2.4 % of the worker's process at 759
    alarms/s, py-spy)."""

    _default = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._default(key, all_partitions, available))
        return all_partitions[_key_hash(bytes(key)) % len(all_partitions)]


def _aiokafka_producer(settings: Settings, *, client_id: str) -> AIOKafkaProducer:
    """An idempotent producer: acks from all in-sync replicas, no duplicates on retry, order
    kept per partition. No linger by default: alarms are latency-bound (see kafka_linger_ms)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.kafka_linger_ms,
        max_batch_size=256 * 1024,
        partitioner=CachedKeyPartitioner(),
        request_timeout_ms=settings.kafka_request_timeout_ms,
        retry_backoff_ms=100,
    )


def consumer(settings: Settings, *topic_names: str, group_id: str, client_id: str) -> AIOKafkaConsumer:
    """A consumer in a group that commits offsets itself, only after the work is durable."""
    return AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_records=settings.worker_batch_max,
        session_timeout_ms=10000,
        heartbeat_interval_ms=3000,
        max_poll_interval_ms=300000,
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )


async def ensure_topics(settings: Settings, *, timeout: float = 60.0) -> None:
    """Create the project's topics if they are missing (idempotent)."""
    names = topics(settings).all()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="pingan-admin",
            request_timeout_ms=settings.kafka_request_timeout_ms,
        )
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                new = [
                    NewTopic(
                        name=n,
                        num_partitions=settings.kafka_partitions,
                        replication_factor=settings.kafka_replication,
                        topic_configs=_topic_configs(settings),
                    )
                    for n in missing
                ]
                try:
                    await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
                log.info("kafka topics created", topics=missing)
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("kafka not reachable yet, retrying", bootstrap=settings.kafka_bootstrap)
            await asyncio.sleep(1.0)
        finally:
            await admin.close()


async def delete_consumer_groups(admin: AIOKafkaAdminClient, groups: list[str]) -> dict[str, int]:
    """Delete consumer groups (their committed offsets), each at its coordinator; returns the
    broker's error code per group (0 deleted, 68 still has members, 69 unknown). aiokafka's
    admin client has no call for it; the request is Kafka's DeleteGroups. A broker loads every
    group it knows at start, so groups of throw-away runs are deleted with their topics."""
    by_node: dict[int, list[str]] = {}
    for group in groups:
        by_node.setdefault(await admin.find_coordinator(group), []).append(group)
    codes: dict[str, int] = {}
    for node, names in by_node.items():
        # A private call: the admin client sends a request to a given broker only this way.
        response = await admin._send_request(DeleteGroupsRequest(names), node)
        codes.update({str(group): int(code) for group, code in response.results})
    return codes


def _topic_configs(settings: Settings) -> dict[str, Any]:
    configs: dict[str, Any] = {"retention.ms": str(7 * 24 * 3600 * 1000)}
    if settings.kafka_replication >= 3:
        configs["min.insync.replicas"] = "2"
    return configs

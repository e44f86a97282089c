"""The escalation worker: accepted events from Kafka into Postgres, exactly once in effect.

Each batch fetched from `pingan.alarm-events` is recorded in one Postgres transaction (event
rows, incidents opened or joined, notifications queued, outbox rows); only after the commit
are the Kafka offsets committed (in the background, while the next batch is recorded; one
commit in flight, the newest offsets next). A crash in between means a redelivery, which the
unique (device_id, event_id) key turns into a no-op. A record that cannot be recorded on its own is
kept in `unprocessable_events` and sent to the dead-letter topic; the batch goes on.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from core import db, kafka
from core.lifecycle import Component
from core.metrics import Counters
from core.pg_errors import is_transient
from core.settings import Settings
from core.timeutil import utcnow
from schemas.messages import AcceptedEvent, Ingress, RejectedInput, RejectReason
from workers.batch_recorder import BatchRecorder
from workers.incident_store import Correlation, IncidentStore, Outcome
from workers.notifier import Notifier

log = structlog.get_logger(__name__)

_decoder = msgspec.json.Decoder(AcceptedEvent)


# Kafka offset commits, at most this often (one per batch was one per alarm at light load).
COMMIT_INTERVAL_S = 0.2


class EscalationWorker(Component):
    name = "worker"

    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any]) -> None:
        super().__init__()
        self.settings = settings
        self.pool = pool
        self.topics = kafka.topics(settings)
        self.store = IncidentStore(
            self.topics,
            correlation=Correlation(
                window=timedelta(seconds=settings.correlation_window_s),
                threshold=settings.correlation_threshold,
            ),
        )
        self.batch = BatchRecorder(self.store)
        self.counters = Counters("worker")
        self.ready = asyncio.Event()
        self._offsets: dict[TopicPartition, int] = {}  # recorded, not yet committed to Kafka
        self._committer: asyncio.Task[None] | None = None
        self._local_notifier: Notifier | None = None

    def deliver_with(self, notifier: Notifier) -> None:
        """Hand the pages of the incidents each committed batch opened to `notifier`, a
        notifier in this process, instead of NOTIFYing every notifier through Postgres: the
        officer's page goes out without a claim or another process to wake. The rows are
        committed with a lease; should this process die before they were recorded sent, the
        other notifiers page the officers when it runs out. What the per-event path queued (a
        join, a cancel, a major incident) it claims, kicked."""
        self._local_notifier = notifier
        self.batch.handover_lease = timedelta(seconds=self.settings.notifier_handover_lease_s)

    async def run(self) -> None:
        consumer = kafka.consumer(
            self.settings,
            self.topics.alarm_events,
            group_id=self.settings.kafka_consumer_group,
            client_id=f"pingan-worker-{self.settings.instance_id}",
        )
        producer = kafka.producer(self.settings, client_id=f"pingan-worker-{self.settings.instance_id}")
        await consumer.start()
        try:
            await producer.start()
            try:
                while not self.stopping:
                    batches = await consumer.getmany(timeout_ms=200, max_records=self.settings.worker_batch_max)
                    if not self.ready.is_set() and consumer.assignment():
                        # Joined the group and got partitions: from here on nothing waits on us.
                        self.ready.set()
                        log.info("worker ready", group=self.settings.kafka_consumer_group)
                    if not batches:
                        continue
                    done = await self._process(batches, producer)
                    if not done:
                        break  # stop asked for while retrying: leave the offsets uncommitted
                    self._commit_soon(consumer, batches)
            finally:
                await producer.stop()
        finally:
            if self._committer is not None:
                await self._committer  # the last recorded offsets, before the consumer goes
            await consumer.stop()
            log.info("worker stopped", **self.counters.snapshot())

    def _commit_soon(self, consumer: Any, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Commit the offsets of a recorded batch without waiting for Kafka: the next batch is
        fetched and recorded meanwhile. Offsets recorded while a commit is in flight go in
        the next one."""
        for tp, recs in batches.items():
            if recs:
                self._offsets[tp] = recs[-1].offset + 1
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending(consumer), name="worker.commit")

    async def _commit_pending(self, consumer: Any) -> None:
        while self._offsets:
            offsets, self._offsets = self._offsets, {}
            try:
                await consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # Partitions moved to another worker: it will redeliver, and the unique keys
                # make the repeat harmless.
                log.warning("offset commit failed; records will be redelivered", error=repr(exc))
            except Exception as exc:  # noqa: BLE001 - a lost commit is a redelivery, not a stop
                log.warning("offset commit failed; records will be redelivered", error=repr(exc))
            # At most one commit per interval: the batches recorded meanwhile go in the next.
            # Should the worker die, they are redelivered (and recorded once, by their keys).
            # A stop cuts the pause short: the last offsets are committed before the consumer goes.
            await self.wait_stop(COMMIT_INTERVAL_S)

    async def _process(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]], producer: Any) -> bool:
        decoded: list[tuple[ConsumerRecord[bytes, bytes], AcceptedEvent]] = []
        for recs in batches.values():
            for rec in recs:
                try:
                    decoded.append((rec, _decoder.decode(rec.value or b"")))
                except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                    await self._unprocessable(rec, f"undecodable record: {exc!r}", producer)
        delay = 0.1
        while True:
            try:
                outcome = await self._record_batch(decoded)
                break
            except Exception as exc:  # noqa: BLE001 - classified just below
                if not is_transient(exc):
                    log.warning("batch failed, recording one by one", error=repr(exc))
                    outcome = await self._record_singly(decoded, producer)
                    if outcome is None:
                        return False
                    break
                log.warning("postgres unavailable, retrying batch", error=repr(exc), delay=delay)
                if await self.wait_stop(delay):
                    return False
                delay = min(delay * 2, 5.0)
        self._count(outcome)
        if self._local_notifier is not None:
            if outcome.handed:
                self._local_notifier.hand_over(outcome.handed)
            if outcome.to_claim:  # what the per-event path queued (a join, a cancel, a major incident)
                self._local_notifier.kick()
        return True

    async def _record_batch(self, decoded: list[tuple[ConsumerRecord[bytes, bytes], AcceptedEvent]]) -> Outcome:
        async with db.transaction(self.pool) as conn:
            return await self.batch.record(conn, [(a, rec.partition, rec.offset) for rec, a in decoded])

    async def _record_singly(
        self, decoded: list[tuple[ConsumerRecord[bytes, bytes], AcceptedEvent]], producer: Any
    ) -> Outcome | None:
        total = Outcome()
        for rec, accepted in decoded:
            delay = 0.1
            while True:
                try:
                    async with db.transaction(self.pool) as conn:
                        one = await self.store.record(conn, accepted, partition=rec.partition, offset=rec.offset)
                    total.add(one)
                    break
                except Exception as exc:  # noqa: BLE001 - classified just below
                    if is_transient(exc):
                        if await self.wait_stop(delay):
                            return None
                        delay = min(delay * 2, 5.0)
                        continue
                    log.error(
                        "event could not be recorded",
                        device_id=accepted.event.device_id,
                        event_id=accepted.event.event_id,
                        error=repr(exc),
                    )
                    await self._unprocessable(rec, repr(exc), producer)
                    break
        return total

    async def _unprocessable(self, rec: ConsumerRecord[bytes, bytes], reason: str, producer: Any) -> None:
        """Keep a record we cannot process: in Postgres and on the dead-letter topic."""
        device_id = rec.key.decode("utf-8", "replace") if rec.key else None
        raw = rec.value or b""
        self.counters.inc("unprocessable")
        delay = 0.1
        while True:
            try:
                async with db.acquire(self.pool) as conn:
                    await conn.execute(
                        "INSERT INTO unprocessable_events (device_id, reason, record) VALUES ($1, $2, $3)",
                        device_id,
                        reason[:2000],
                        raw,
                    )
                break
            except Exception as exc:
                if not is_transient(exc) or await self.wait_stop(delay):
                    raise
                delay = min(delay * 2, 5.0)
        record = RejectedInput(
            reason=RejectReason.UNPROCESSABLE,
            detail=reason[:2000],
            received_at=utcnow(),
            ingress=Ingress.MQTT,
            gateway_id=f"worker-{self.settings.instance_id}",
            device_id=device_id,
            payload=raw[:8192].decode("utf-8", "replace"),
            payload_bytes=len(raw),
        )
        await producer.send_and_wait(self.topics.alarm_events_dlq, msgspec.json.encode(record), key=rec.key)

    def _count(self, o: Outcome) -> None:
        self.counters.inc("recorded", o.recorded)
        self.counters.inc("duplicates", o.duplicates)
        self.counters.inc("incidents_opened", o.incidents_opened)
        self.counters.inc("incidents_joined", o.incidents_joined)
        self.counters.inc("majors_opened", o.majors_opened)
        self.counters.inc("cancels", o.cancels)
        if o.recorded or o.duplicates:
            log.debug(
                "batch recorded",
                recorded=o.recorded,
                duplicates=o.duplicates,
                opened=o.incidents_opened,
                joined=o.incidents_joined,
            )

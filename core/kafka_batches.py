"""Records handed to Kafka a batch per partition at a time: for the many and unhurried.

aiokafka's `send` costs, per record, a coroutine, a partitioner call, a future and the record's
metadata when its batch is acknowledged: a fifth of the gateway's process at 18,000
heartbeats/s (py-spy). `BatchedSends.send` appends the record to a buffer and returns the
future of that buffer's delivery, shared by every record in it. Every `linger` seconds (from
the first record of a buffer) a task takes the buffer, partitions it as `send` would (murmur2
of the key, so a device's records land on the partition its other records go to) and hands
Kafka one batch per partition (`Producer.send_batches`), under the same idempotent producer:
the order of a partition's records is the order of their `send` calls. The next buffer goes
once the one before is acknowledged (or failed), so a buffer holds what came during a linger
or a round trip to Kafka, whichever is longer.

The future fails as a whole when any of its batches fails; its callers send again record by
record (a repeat is harmless: the event id makes it one). What was sent before `stop` is sent
before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.kafka import Producer


class BatchedSends:
    def __init__(self, producer: Producer, *, linger_s: float) -> None:
        self._producer = producer
        self._linger_s = linger_s
        self._records: list[tuple[str, bytes, bytes]] = []
        self._delivered: asyncio.Future[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._stop_asked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stopping = False
        self._stop_asked.clear()
        self._task = asyncio.create_task(self._run(), name="kafka.batched-sends")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    def send(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Queue a record; returns the future of its delivery (acks=all), shared with the
        records queued with it."""
        if not self.running:
            raise RuntimeError("batched sends not running")
        if self._delivered is None:
            self._delivered = asyncio.get_running_loop().create_future()
            self._wake.set()
        self._records.append((topic, key, value))
        return self._delivered

    async def stop(self, timeout: float = 30.0) -> None:
        """Send what is queued, then end the task (cut short after `timeout`: the callers of
        what was not sent see their futures fail and the broker keeps those messages)."""
        if self._task is None:
            return
        self._stopping = True
        self._stop_asked.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            self._task = None
        if self._delivered is not None and not self._delivered.done():
            self._delivered.set_exception(RuntimeError("batched sends stopped"))

    async def _run(self) -> None:
        previous: asyncio.Future[None] | None = None
        while True:
            if not self._stopping:
                await self._wake.wait()
            if not self._stopping:  # a stop cuts the linger short
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_asked.wait(), self._linger_s)
            if previous is not None and not previous.done():
                # One delivery in flight: what comes meanwhile goes with the next, whole.
                # aiokafka sends a broker one request at a time, with one batch per partition:
                # handed a batch every linger while the one before is still out, the batches
                # queue up behind each other, and a partition moves one linger's records per
                # round trip, whatever the rate (at 20,000 heartbeats/s, a round trip above
                # the 20 ms linger was a backlog that only grew).
                await asyncio.wait({previous})
            self._wake.clear()
            records, delivered = self._records, self._delivered
            self._records, self._delivered = [], None
            if delivered is None:
                if self._stopping:
                    return
                continue
            try:
                acks = await self._producer.send_batches(records)
            except asyncio.CancelledError:
                delivered.set_exception(RuntimeError("batched sends stopped"))
                raise
            except Exception as exc:  # noqa: BLE001 - the callers send again, record by record
                delivered.set_exception(exc)
                continue
            _settle_when_done(delivered, acks)
            previous = delivered


def _settle_when_done(delivered: asyncio.Future[None], acks: list[asyncio.Future[Any]]) -> None:
    """`delivered` succeeds when every batch was acknowledged, fails with the first failure."""
    remaining = len(acks)

    def one_done(ack: asyncio.Future[Any]) -> None:
        nonlocal remaining
        remaining -= 1
        exc = RuntimeError("a Kafka batch was cancelled") if ack.cancelled() else ack.exception()
        if delivered.done():
            return
        if exc is not None:
            delivered.set_exception(exc)
        elif remaining == 0:
            delivered.set_result(None)

    if not acks:
        delivered.set_result(None)
    for ack in acks:
        ack.add_done_callback(one_done)

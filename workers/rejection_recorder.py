"""Copies the dead-letter topic into Postgres, so every rejection is on the record."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import msgspec
import structlog
from aiokafka.errors import CommitFailedError, KafkaError

from core import db, kafka
from core.lifecycle import Component
from core.metrics import Counters
from core.pg_errors import is_transient
from core.settings import Settings
from schemas.messages import RejectedInput

log = structlog.get_logger(__name__)

_decoder = msgspec.json.Decoder(RejectedInput)

_INSERT = """
INSERT INTO rejected_inputs (kafka_topic, kafka_partition, kafka_offset, reason, detail, device_id,
                             event_id, mqtt_topic, ingress, gateway_id, received_at, payload,
                             payload_bytes)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT ON CONSTRAINT rejected_inputs_once DO NOTHING
"""


def _text(value: str | None) -> str | None:
    """Postgres text holds no NUL character: the raw input may (it is shown as U+FFFD)."""
    return None if value is None else value.replace("\x00", "\ufffd")


class RejectionRecorder(Component):
    name = "dlq-recorder"

    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any]) -> None:
        super().__init__()
        self.settings = settings
        self.pool = pool
        self.topics = kafka.topics(settings)
        self.counters = Counters("dlq-recorder")
        self.ready = asyncio.Event()

    async def run(self) -> None:
        consumer = kafka.consumer(
            self.settings,
            self.topics.alarm_events_dlq,
            group_id=self.settings.kafka_consumer_group + "-dlq",
            client_id=f"pingan-dlq-{self.settings.instance_id}",
        )
        await consumer.start()
        try:
            while not self.stopping:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                if not self.ready.is_set() and consumer.assignment():
                    self.ready.set()
                if not batches:
                    continue
                rows = []
                for tp, recs in batches.items():
                    for rec in recs:
                        try:
                            r = _decoder.decode(rec.value or b"")
                        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
                            log.error(
                                "undecodable dead-letter record",
                                error=str(exc),
                                partition=tp.partition,
                                offset=rec.offset,
                            )
                            continue
                        rows.append(
                            (
                                tp.topic,
                                tp.partition,
                                rec.offset,
                                r.reason.value,
                                _text(r.detail),
                                _text(r.device_id),
                                _text(r.event_id),
                                _text(r.topic),
                                r.ingress.value,
                                _text(r.gateway_id),
                                r.received_at,
                                _text(r.payload),
                                r.payload_bytes,
                            )
                        )
                if not await self._insert(rows):
                    return
                self.counters.inc("recorded", len(rows))
                try:
                    await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items() if recs})
                except (CommitFailedError, KafkaError) as exc:
                    log.warning("offset commit failed; records will be redelivered", error=repr(exc))
        finally:
            await consumer.stop()

    async def _insert(self, rows: list[tuple[Any, ...]]) -> bool:
        """Insert the rows; False when stopped while Postgres was away. A batch Postgres
        refuses goes row by row, and a row it still refuses is recorded without its raw input,
        so that one odd record never stops the recorder (it would meet it again on restart)."""
        delay = 0.1
        while True:
            try:
                async with db.acquire(self.pool) as conn:
                    await conn.executemany(_INSERT, rows)
                return True
            except Exception as exc:  # noqa: BLE001 - classified just below
                if not is_transient(exc):
                    break
                if await self.wait_stop(delay):
                    return False
                delay = min(delay * 2, 5.0)
        for row in rows:
            delay = 0.1
            while True:
                try:
                    async with db.acquire(self.pool) as conn:
                        await conn.execute(_INSERT, *row)
                    break
                except Exception as exc:  # noqa: BLE001 - classified just below
                    if is_transient(exc):
                        if await self.wait_stop(delay):
                            return False
                        delay = min(delay * 2, 5.0)
                        continue
                    log.error("dead-letter record refused by postgres", error=repr(exc), offset=row[2])
                    bare = (*row[:4], f"{row[4]!r}"[:2000], None, None, None, row[8], "?", row[10], "", row[12])
                    async with db.acquire(self.pool) as conn:
                        await conn.execute(_INSERT, *bare)
                    break
        return True

"""The outbox relay: publishes rows of the transactional outbox to Kafka or MQTT, in id order.

Rows are claimed with `FOR UPDATE SKIP LOCKED`, published, and deleted in the same transaction
once the broker holds them (the outbox is a queue: what happened is on the incidents'
timelines, what was announced is in Kafka); a relay that dies mid-way leaves them to the next
claim (at-least-once; records carry the incident's version so a consumer can drop a repeat).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from core import db, kafka
from core.futures import outcomes
from core.lifecycle import Component
from core.metrics import Counters
from core.mqtt import MqttClient
from core.pg_errors import is_transient
from core.pg_wakeup import Wakeup
from core.platform_mqtt import platform_client
from core.settings import Settings

log = structlog.get_logger(__name__)

_CLAIM = """
SELECT id, destination, topic, key, payload, attempts
  FROM outbox
 WHERE next_attempt_at <= clock_timestamp()
 ORDER BY id
 LIMIT $1
 FOR UPDATE SKIP LOCKED
"""


_BATCH = 500


class OutboxRelay(Component):
    name = "relay"

    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any]) -> None:
        super().__init__()
        self.settings = settings
        self.pool = pool
        self.counters = Counters("relay")
        self.ready = asyncio.Event()

    async def run(self) -> None:
        producer = kafka.producer(self.settings, client_id=f"pingan-relay-{self.settings.instance_id}")
        mqtt = platform_client(
            self.settings,
            client_id=f"pingan-relay-{self.settings.instance_id}",
            name="relay.mqtt",
        )
        wakeup = Wakeup(self.settings.database_url, "pingan_outbox", timeout_s=self.settings.db_command_timeout_s)
        await producer.start()
        try:
            await mqtt.start()
            try:
                await wakeup.start()
                self.ready.set()
                log.info("relay ready")
                while not self.stopping:
                    # The claim below finds whatever the wake-ups so far announced: forget
                    # them (a writer's commit and the notifier's record of its page both
                    # NOTIFY; the second arrives during the linger, and would otherwise send
                    # the relay round again to claim nothing).
                    wakeup.clear()
                    try:
                        busy = await self._relay_batch(producer, mqtt)
                    except Exception as exc:
                        if not is_transient(exc):
                            raise
                        log.warning("postgres unavailable", error=repr(exc))
                        busy = False
                        await self.wait_stop(1.0)
                    if not busy:
                        await self.idle(wakeup.wait(self.settings.poll_interval_s))
                        await self.wait_stop(self.settings.relay_linger_ms / 1000)
            finally:
                await wakeup.stop()
                await mqtt.stop()
        finally:
            await producer.stop()
            log.info("relay stopped", **self.counters.snapshot())

    async def _relay_batch(self, producer: Any, mqtt: MqttClient) -> bool:
        """Publish one claimed batch; True when it was full (more rows are likely waiting:
        claim again at once). A part-full batch means the relay is level with the writers:
        the next NOTIFY wakes it (one sent meanwhile already did)."""
        async with db.transaction(self.pool) as conn:
            rows = await conn.fetch(_CLAIM, _BATCH)
            if not rows:
                self.counters.inc("empty_claims")
                return False
            futures: list[asyncio.Future[Any]] = []
            for r in rows:
                if r["destination"] == "kafka":
                    key = r["key"].encode() if r["key"] else None
                    fut = await producer.send(r["topic"], bytes(r["payload"]), key=key)
                    futures.append(fut)
                    if fut.done() and fut.exception() is not None:
                        # Kafka would not even take it (no metadata within the request timeout):
                        # the rest of the batch waits for the next claim instead of as long again.
                        break
                else:
                    futures.append(mqtt.publish_nowait(r["topic"], bytes(r["payload"]), qos=1))
            results = await outcomes(futures, 15.0)
            done_ids = []
            for r, res in zip(rows[: len(futures)], results, strict=True):
                if isinstance(res, BaseException):
                    self.counters.inc("failed")
                    log.warning(
                        "outbox publish failed, will retry",
                        outbox_id=r["id"],
                        topic=r["topic"],
                        error=repr(res),
                    )
                    await conn.execute(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = $2, "
                        "next_attempt_at = clock_timestamp() + $3::interval WHERE id = $1",
                        r["id"],
                        repr(res)[:500],
                        timedelta(seconds=min(30, 2 ** min(r["attempts"], 5))),
                    )
                else:
                    done_ids.append(r["id"])
            if done_ids:
                await conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", done_ids)
                self.counters.inc("published", len(done_ids))
            return len(rows) == _BATCH

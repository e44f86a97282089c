"""The notifier: delivers queued notifications to officer apps over MQTT.

Notifications are rows in Postgres, written by the worker in the transaction that opened the
incident. The notifier claims due rows (`FOR UPDATE SKIP LOCKED`, so several notifiers share
the work), publishes each with QoS 1 to `pingan/v1/officers/{officer_id}/notifications`, and
records the outcome: sent with the time of the broker's PUBACK, or a retry later. A notifier
that dies mid-way leaves its rows to the next claim (an officer app may then see a
notification twice; `notification_id` lets it drop the repeat).

A worker hands the notifications of the incidents its batch opened to the notifier in its own
process (`hand_over`), with their pages: they go out without a claim, since the rows were
committed with a lease that keeps the other notifiers' claims off them for a while. Handed
pages are published a chunk at a time and recorded behind them: the next chunks go out while
the broker acknowledges and Postgres records the ones before (a window of
`HANDED_WINDOW` chunks), so the notifier keeps up with its worker instead of publishing,
waiting and recording in turn.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import timedelta
from typing import Any, NamedTuple

import asyncpg
import msgspec
import structlog

from core import db
from core.futures import outcomes
from core.lifecycle import Component
from core.metrics import Counters
from core.mqtt import MqttClient
from core.pg_errors import is_transient
from core.pg_wakeup import Wakeup
from core.platform_mqtt import platform_client
from core.settings import Settings
from core.timeutil import utcnow
from schemas import topics as mqtt_topics
from schemas.messages import OfficerNotification
from schemas.topics import KafkaTopics
from workers.incident_store import HandedNotification

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 20

# Chunks of handed pages published and not yet recorded, at most: while Postgres records one,
# the broker acknowledges the next and the one after goes out. The chunks waiting when a
# record starts go in that record (one statement).
HANDED_WINDOW = 4


class _Published(NamedTuple):
    """A chunk of handed notifications, published: the broker's PUBACK (or error) per page."""

    handed: list[HandedNotification]
    acks: list[asyncio.Future[None]]


# What a page says: the notification, its incident and the incident's device.
PAGE_ROWS = """
SELECT n.id, n.officer_id, n.kind, n.level, n.reason, n.created_at, n.attempts,
       i.incident_id, i.case_number, i.first_event_id, i.priority, i.event_type, i.device_id,
       i.grid_code, i.pressed_at, i.status, d.kind AS device_kind, d.address,
       d.resident_note
  FROM notifications n
  JOIN incidents i ON i.incident_id = n.incident_id
  LEFT JOIN devices d ON d.device_id = i.device_id
"""

# The due rows, found by the range of notifications_pending_idx: statement_timestamp() is
# stable, so the index bounds the scan by it. clock_timestamp() is volatile and was a filter,
# so a claim read every pending row and every dead index entry: the pages handed over under a
# lease stay pending until recorded sent, and under load (1,200 alarms/s) an empty claim took
# 6-19 ms. Now it reads only what is due.
_CLAIM = (
    PAGE_ROWS
    + """
 WHERE n.status = 'pending' AND n.next_attempt_at <= statement_timestamp()
 ORDER BY n.id
 LIMIT $1
 FOR UPDATE OF n SKIP LOCKED
"""
)


def page_of(r: Any) -> OfficerNotification:
    """The page of a `PAGE_ROWS` row."""
    return OfficerNotification(
        notification_id=r["id"],
        officer_id=r["officer_id"],
        incident_id=str(r["incident_id"]),
        case_number=r["case_number"],
        event_id=r["first_event_id"],
        kind=r["kind"],
        reason=r["reason"],
        priority=r["priority"],
        event_type=r["event_type"],
        grid_code=r["grid_code"],
        pressed_at=r["pressed_at"],
        created_at=r["created_at"],
        level=r["level"],
        device_id=r["device_id"],
        device_kind=r["device_kind"],
        address=r["address"],
        resident_note=r["resident_note"] or None,
        status=r["status"],
    )


# The notifications delivered, recorded in one statement: each marked sent (unless it is no
# longer pending: a hand-over whose lease ran out was delivered by a claim meanwhile); on each
# incident, who was notified (timeline) and, the first time, that it is notified; and the
# incident update for the live queue, by the outbox. The incidents are locked in one order
# first (two notifiers, or a notifier and a worker, never wait on each other in a cycle). The
# update is the IncidentUpdate msgspec would write, "at" given ($4, as msgspec writes it).
_SENT_RECORDED = """
WITH sent AS (
    UPDATE notifications SET status = 'sent', sent_at = $2, attempts = attempts + 1, last_error = NULL
     WHERE id = ANY($1::bigint[]) AND status = 'pending'
    RETURNING id, incident_id, officer_id
), per_incident AS (
    SELECT incident_id, json_agg(officer_id ORDER BY id) AS officers FROM sent GROUP BY incident_id
), locked AS (
    SELECT incident_id FROM incidents WHERE incident_id IN (SELECT incident_id FROM per_incident)
     ORDER BY incident_id FOR UPDATE
), timeline AS (
    INSERT INTO incident_timeline (incident_id, kind, actor, detail)
    SELECT p.incident_id, 'notifications_sent', 'system:notifier',
           jsonb_build_object('officers', p.officers, 'channel', 'mqtt')
      FROM per_incident p
     WHERE (SELECT count(*) FROM locked) >= 0  -- after the locks: the rows' own FK checks come last
     ORDER BY p.incident_id
), updated AS (
    UPDATE incidents i
       SET first_notified_at = COALESCE(i.first_notified_at, $2),
           status = CASE WHEN i.status = 'opened' THEN 'notified' ELSE i.status END,
           version = i.version + 1,
           updated_at = clock_timestamp()
      FROM locked l
     WHERE i.incident_id = l.incident_id
    RETURNING i.incident_id, i.case_number, i.status, i.priority, i.level, i.device_id, i.grid_code, i.version
), outbox AS (
    INSERT INTO outbox (destination, topic, key, payload)
    SELECT 'kafka', $3, u.incident_id::text,
           convert_to(json_build_object(
               'incident_id', u.incident_id::text, 'case_number', u.case_number, 'change', 'notified',
               'status', u.status, 'priority', u.priority, 'level', u.level,
               'device_id', coalesce(u.device_id, ''), 'grid_code', u.grid_code, 'at', $4::text,
               'version', u.version)::text, 'UTF8')
      FROM updated u
     ORDER BY u.incident_id
)
SELECT (SELECT count(*) FROM sent) AS sent, pg_notify('pingan_outbox', '')
"""

_RETRY = """
UPDATE notifications
   SET attempts = attempts + 1, last_error = $2,
       status = CASE WHEN attempts + 1 >= $4 THEN 'failed' ELSE 'pending' END,
       next_attempt_at = clock_timestamp() + $3::interval
 WHERE id = $1
"""


class Notifier(Component):
    name = "notifier"

    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any], *, role: str = "notifier") -> None:
        """`role` names its MQTT client (one client id per process): "notifier" for the
        component, "worker-notifier" for the one a worker runs beside it."""
        super().__init__()
        self.settings = settings
        self.pool = pool
        self.role = role
        self.kafka_topics = KafkaTopics(settings.kafka_topic_prefix)
        self.counters = Counters(role)
        self.ready = asyncio.Event()
        self._wakeup: Wakeup | None = None
        # Handed over, with the time (loop clock) their lease runs out.
        self._handed: deque[tuple[float, HandedNotification]] = deque()
        self._handed_ready = asyncio.Event()
        self._claim_requested = True

    def hand_over(self, handed: list[HandedNotification]) -> None:
        """Deliver notifications a worker in this process committed with a lease (see
        Settings.notifier_handover_lease_s), without claiming them."""
        now = asyncio.get_running_loop().time()
        self._drop_expired(now)  # what waits here is bounded by the lease, whatever the broker does
        self._handed.extend((now + self.settings.notifier_handover_lease_s, h) for h in handed)
        self._handed_ready.set()  # deliver them; no claim for them

    def kick(self) -> None:
        """Claim now: called by a worker in the same process right after it committed
        notifications (no NOTIFY round trip through Postgres, no other process to wake)."""
        self._claim_requested = True
        if self._wakeup is not None:
            self._wakeup.set()

    def _on_notify(self, _payload: str | None) -> None:
        # A NOTIFY, or the listening connection reopened (one may have been missed): claim.
        self._claim_requested = True

    async def run(self) -> None:
        mqtt = platform_client(
            self.settings,
            client_id=f"pingan-{self.role}-{self.settings.instance_id}",
            name=f"{self.role}.mqtt",
        )
        wakeup = self._wakeup = Wakeup(
            self.settings.database_url,
            "pingan_notifications",
            self._on_notify,
            timeout_s=self.settings.db_command_timeout_s,
        )
        await mqtt.start()
        try:
            await wakeup.start()
            try:
                self.ready.set()
                log.info("notifier ready")
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._deliver_handed(mqtt), name=f"{self.role}.handed")
                    await self._claim_loop(mqtt, wakeup)
            finally:
                await wakeup.stop()
        finally:
            await mqtt.stop()
            log.info("notifier stopped", **self.counters.snapshot())

    async def _claim_loop(self, mqtt: MqttClient, wakeup: Wakeup) -> None:
        """Claim when a claim was asked for (a NOTIFY, a kick, a full batch before) or the poll
        is due. A hand-over asks for none: at light load it would be an empty claim per alarm."""
        loop = asyncio.get_running_loop()
        poll = self.settings.poll_interval_s
        last_claim = -poll
        while not self.stopping:
            busy = False
            try:
                if self._claim_requested or loop.time() - last_claim >= poll:
                    self._claim_requested = False
                    last_claim = loop.time()
                    if await self._deliver_batch(mqtt):
                        self._claim_requested = busy = True
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("postgres unavailable", error=repr(exc))
                await self.wait_stop(1.0)
            if not busy:
                await self.idle(wakeup.wait(max(0.0, last_claim + poll - loop.time())))

    async def _deliver_batch(self, mqtt: MqttClient) -> bool:
        """Deliver one claimed batch; True when it was full (claim again at once). After a
        part-full batch the next NOTIFY wakes the notifier (one sent meanwhile already did)."""
        async with db.transaction(self.pool) as conn:
            rows = await conn.fetch(_CLAIM, self.settings.notifier_batch_max)
            if not rows:
                return False
            pages = [page_of(r) for r in rows]
            results = await self._publish(mqtt, pages)
            await self._settle(conn, [(r["id"], r["incident_id"], r["attempts"]) for r in rows], pages, results)
            return len(rows) == self.settings.notifier_batch_max

    def _drop_expired(self, now: float) -> None:
        """Leave the handed pages whose lease ran out while they waited here (the broker slow or
        away) to the claims, here or in another notifier: publishing them too would page twice.
        The oldest are first, so they are the ones at the front."""
        expired = 0
        while self._handed and self._handed[0][0] <= now:
            self._handed.popleft()
            expired += 1
        if expired:
            self.counters.inc("handover_expired", expired)
            log.warning("handed notifications left to the claims", notifications=expired)

    def _take_handed(self, n: int) -> list[HandedNotification]:
        """Up to `n` handed notifications whose lease has not run out, oldest first."""
        self._drop_expired(asyncio.get_running_loop().time())
        return [self._handed.popleft()[1] for _ in range(min(n, len(self._handed)))]

    async def _deliver_handed(self, mqtt: MqttClient) -> None:
        """Deliver the notifications a worker in this process hands over, until a stop: each
        chunk published at once (no claim: the other notifiers leave them alone for the
        hand-over lease), then recorded by `_record_handed` while the next chunks go out."""
        window: asyncio.Queue[_Published | None] = asyncio.Queue(HANDED_WINDOW)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._record_handed(window), name=f"{self.role}.record")
            while not self.stopping:
                handed = self._take_handed(self.settings.notifier_batch_max)
                if not handed:
                    self._handed_ready.clear()
                    await self.idle(self._handed_ready.wait())
                    continue
                acks = self._send(mqtt, [h.page for h in handed])
                await window.put(_Published(handed, acks))  # waits while the window is full
            await window.put(None)  # a stop: what was published is recorded, then the recorder ends

    async def _record_handed(self, window: asyncio.Queue[_Published | None]) -> None:
        """Record the published chunks once the broker acknowledged them: each chunk waiting
        in the window goes in one statement. Ends at the window's end (None)."""
        while True:
            first = await window.get()
            if first is None:
                return
            chunks, last = [first], False
            while not window.empty():
                nxt = window.get_nowait()
                if nxt is None:
                    last = True
                    break
                chunks.append(nxt)
            handed = [h for c in chunks for h in c.handed]
            results = await outcomes([a for c in chunks for a in c.acks], 10.0)
            try:
                async with db.acquire(self.pool) as conn:  # one statement when all went out: no transaction
                    await self._settle(
                        conn, [(h.id, h.incident_id, 0) for h in handed], [h.page for h in handed], results
                    )
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # The pages went out (or not); the rows stay pending, and the notifiers' claims
                # deliver them once the lease runs out.
                log.warning("handed notifications not recorded", error=repr(exc), notifications=len(handed))
            if last:
                return

    def _send(self, mqtt: MqttClient, pages: list[OfficerNotification]) -> list[asyncio.Future[None]]:
        """Publish each page with QoS 1 without waiting: per page, the future of its PUBACK."""
        return [
            mqtt.publish_nowait(mqtt_topics.officer_notifications(p.officer_id), msgspec.json.encode(p), qos=1)
            for p in pages
        ]

    async def _publish(self, mqtt: MqttClient, pages: list[OfficerNotification]) -> list[Any]:
        """Publish each page with QoS 1; per page, the broker's PUBACK or the error."""
        return await outcomes(self._send(mqtt, pages), 10.0)

    async def _settle(
        self,
        conn: asyncpg.Connection[Any],
        rows: list[tuple[int, Any, int]],
        pages: list[OfficerNotification],
        results: list[Any],
    ) -> None:
        """Record what publishing (id, incident_id, attempts) rows gave: sent, or a retry later."""
        sent_ids: list[int] = []
        sent_at = utcnow()
        for (row_id, incident_id, attempts), page, res in zip(rows, pages, results, strict=True):
            if isinstance(res, BaseException):
                backoff = timedelta(seconds=min(60, 2 ** min(attempts, 6)))
                await conn.execute(_RETRY, row_id, repr(res)[:500], backoff, MAX_ATTEMPTS)
                self.counters.inc("failed")
                log.warning(
                    "notification not delivered",
                    notification_id=row_id,
                    officer_id=page.officer_id,
                    incident_id=str(incident_id),
                    error=repr(res),
                )
                continue
            sent_ids.append(row_id)
        if sent_ids:
            at = msgspec.json.encode(sent_at).decode()[1:-1]
            n = await conn.fetchval(_SENT_RECORDED, sent_ids, sent_at, self.kafka_topics.incident_updates, at)
            self.counters.inc("sent", n)

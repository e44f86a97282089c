"""The live queue: incident updates from Kafka `pingan.incident-updates`, pushed over
WebSocket to every signed-in desk whose jurisdiction covers the incident.

A page connects to `/api/v1/ws?since=<updated_at of the newest row it has>`; the server
registers it for live updates first, then sends every incident of its jurisdiction changed
since then (with a few seconds of overlap), so nothing falls between a drop and a reconnect.
Every message carries the whole incident row with its `version`; the page keeps the newest.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import structlog
from aiohttp import WSMsgType, web
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from core import kafka
from core.settings import Settings
from core.timeutil import utcnow
from dispatch.api import queries
from dispatch.api.common import CLOCK, POOL, current_officer, dumps, time_param, token_of
from schemas.messages import IncidentUpdate

log = structlog.get_logger(__name__)

QUEUE_LIMIT = 2000  # updates waiting for one slow page; beyond that it is told to catch up
CATCH_UP_OVERLAP = timedelta(seconds=10)
PING_EVERY_S = 15.0
_decoder = msgspec.json.Decoder(IncidentUpdate)


def decode_update(raw: bytes) -> IncidentUpdate | None:
    """An incident update from Kafka; None for a record that is not one (it is skipped)."""
    try:
        return _decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None


@dataclass(eq=False)
class Subscriber:
    unit_code: str
    queue: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    overflowed: bool = False


class LiveFeed:
    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any]) -> None:
        self.settings = settings
        self.pool = pool
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.ready = asyncio.Event()
        self.delivered = 0

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            kafka.topics(self.settings).incident_updates,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="latest",
            enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
            client_id=f"pingan-live-{self.settings.instance_id}",
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="api.live-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def subscribe(self, unit_code: str) -> Subscriber:
        sub = Subscriber(unit_code)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    async def _run(self) -> None:
        assert self._consumer is not None
        # Partitions are assigned at once (no group); from here on updates are live.
        while not self._consumer.assignment():  # noqa: ASYNC110 - aiokafka offers no event for it
            await asyncio.sleep(0.05)
        for tp in self._consumer.assignment():
            await self._consumer.seek_to_end(tp)
        self.ready.set()
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            except KafkaError as exc:
                log.warning("live feed: kafka error", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            latest: dict[str, IncidentUpdate] = {}
            for recs in batches.values():
                for rec in recs:
                    upd = decode_update(rec.value or b"")
                    if upd is not None:
                        latest[upd.incident_id] = upd
            if latest and self.subscribers:
                try:
                    await self._push(list(latest))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("live feed: postgres error", error=repr(exc))

    async def _push(self, incident_ids: list[str]) -> None:
        rows = await self.pool.fetch(queries.INCIDENT_ROW + " WHERE i.incident_id = ANY($1::uuid[])", incident_ids)
        paths = {
            str(r["incident_id"]): set(r["path"])
            for r in await self.pool.fetch(
                "SELECT i.incident_id, g.path FROM incidents i JOIN units g ON g.code = i.grid_code "
                "WHERE i.incident_id = ANY($1::uuid[])",
                incident_ids,
            )
        }
        for row in rows:
            message = dumps({"type": "incident", "incident": dict(row)})
            path = paths.get(str(row["incident_id"]), set())
            for sub in list(self.subscribers):
                if sub.unit_code in path:
                    try:
                        sub.queue.put_nowait(message)
                        self.delivered += 1
                    except asyncio.QueueFull:
                        sub.overflowed = True


FEED: web.AppKey[LiveFeed] = web.AppKey("live_feed", LiveFeed)


async def websocket(request: web.Request) -> web.StreamResponse:
    officer = await current_officer(request)
    since = time_param(request, "since", None)
    feed = request.app[FEED]
    ws = web.WebSocketResponse(heartbeat=PING_EVERY_S, max_msg_size=64 * 1024)
    await ws.prepare(request)
    sub = feed.subscribe(officer.unit_code)  # before the catch-up query: nothing falls between
    sender: asyncio.Task[None] | None = None
    try:
        hello = {
            "type": "hello",
            "officer_id": officer.officer_id,
            "unit_code": officer.unit_code,
            "server_time": utcnow(),
        }
        await ws.send_str(dumps(hello).decode())
        if since is not None:
            rows = await request.app[POOL].fetch(
                queries.CHANGED_SINCE, officer.unit_code, since - CATCH_UP_OVERLAP, 5000
            )
            for row in rows:
                await ws.send_str(dumps({"type": "incident", "incident": dict(row), "catch_up": True}).decode())
            await ws.send_str(dumps({"type": "caught_up", "count": len(rows)}).decode())
        # Only now the live updates that queued up meanwhile: one writer on the socket.
        sender = asyncio.create_task(_send_loop(request, ws, sub), name="api.ws-send")
        async for msg in ws:
            if msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                break
            # The page sends nothing we need; anything it sends is ignored.
    finally:
        feed.unsubscribe(sub)
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        await ws.close()
    return ws


async def _send_loop(request: web.Request, ws: web.WebSocketResponse, sub: Subscriber) -> None:
    """Live updates out; an application-level ping every 15 s, which also re-checks the
    session (a signed-out or expired session closes the socket)."""
    from core.sessions import authenticate

    token = token_of(request)
    loop = asyncio.get_running_loop()
    next_ping = loop.time() + PING_EVERY_S
    while not ws.closed:
        if sub.overflowed:
            await ws.send_str(dumps({"type": "resync", "reason": "too many updates queued"}).decode())
            await ws.close(code=4000, message=b"resync")
            return
        try:
            message = await asyncio.wait_for(sub.queue.get(), max(0.0, next_ping - loop.time()))
        except TimeoutError:
            async with request.app[POOL].acquire() as conn:
                still = await authenticate(conn, token or "", now=request.app[CLOCK]())
            if still is None:
                await ws.close(code=4001, message=b"session ended")
                return
            await ws.send_str(dumps({"type": "ping", "server_time": utcnow()}).decode())
            next_ping = loop.time() + PING_EVERY_S
            continue
        await ws.send_str(message.decode())

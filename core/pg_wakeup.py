"""Wake a polling loop at once when Postgres NOTIFYs a channel (the poll stays as a fallback),
or hand each notification's payload to a callback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from core import db

log = structlog.get_logger(__name__)


class Wakeup:
    """LISTENs on `channel` over a connection of its own. A connection into a dead network
    path (nothing answers, nothing resets) is never told it is lost, so every `check_every_s`
    seconds the connection is asked a trivial question; no answer within `timeout_s` and it is
    replaced (meanwhile the poll keeps the loop going)."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        on_payload: Callable[[str | None], None] | None = None,
        *,
        timeout_s: float = 5.0,
        check_every_s: float = 5.0,
    ) -> None:
        """`on_payload` gets each notification's payload, and None after the listening
        connection was (re)opened: notifications may have been missed meanwhile."""
        self._dsn = dsn
        self._channel = channel
        self._on_payload = on_payload
        self._timeout_s = timeout_s
        self._check_every_s = check_every_s
        self._event = asyncio.Event()
        self._conn: asyncpg.Connection[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_listening(), name=f"wakeup.{self._channel}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close()

    async def wait(self, timeout: float) -> None:
        """Return when notified or after `timeout` seconds, whichever comes first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()

    def set(self) -> None:
        """Wake the waiting loop as a notification would (for a writer in the same process)."""
        self._event.set()

    def clear(self) -> None:
        """Forget the wake-ups so far: the caller is about to look for work itself, and will
        find whatever they announced (a notification is sent on commit, so what it announces
        is there for any statement that starts after it arrived)."""
        self._event.clear()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._event.set()
        if self._on_payload is not None:
            self._on_payload(payload)

    def _missed(self) -> None:
        self._event.set()
        if self._on_payload is not None:
            self._on_payload(None)

    async def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _keep_listening(self) -> None:
        while True:
            try:
                lost = asyncio.Event()
                self._conn = await db.connect(self._dsn, timeout=self._timeout_s, command_timeout=self._timeout_s)
                self._conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await self._conn.add_listener(self._channel, self._on_notify)
                self._missed()  # catch up on whatever happened while not listening
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self._check_every_s)
                    if not lost.is_set():
                        await self._conn.fetchval("SELECT 1")
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("listen connection lost", channel=self._channel, error=repr(exc))
            await self._close()
            self._missed()
            await asyncio.sleep(1.0)

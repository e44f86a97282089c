"""A gateway's mirror of the device registry: the whole registry read into the device cache
when the gateway starts and again every `refresh_s`, so that a press is checked without a
round trip to Postgres on its way to Kafka. (A panic button presses rarely: without the
mirror, its cached lookup has always run out by the next press, and every real alarm paid
one.)

A change that matters reaches the cache at once by NOTIFY (the intake forgets the device, and
tells the mirror); one that arrives while a read is under way is applied again after it, so
a row read before the change does not stay. When the listening connection was lost (a change
may have been missed) the cache is cleared, and read again. A registry larger than the cache
keeps its first devices by id in it; the rest are looked up on demand, as without a mirror.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from core.pg_errors import is_transient
from gateways.device_registry import PostgresDeviceLookup
from gateways.validation import DeviceCache

log = structlog.get_logger(__name__)

PAGE = 5000
RETRY_S = 5.0


class DeviceMirror:
    def __init__(self, cache: DeviceCache, registry: PostgresDeviceLookup, *, refresh_s: float) -> None:
        self.cache = cache
        self.registry = registry
        self.refresh_s = refresh_s
        self.loaded = asyncio.Event()
        """Set once the whole registry (or as much of it as the cache holds) has been read."""
        self.reads = 0
        self._again = asyncio.Event()
        self._changed: set[str] | None = None  # changed while a read is under way
        self._cleared = False

    def changed(self, device_id: str | None) -> None:
        """The cache just forgot `device_id` (None: all of it, after a change may have been missed)."""
        if device_id is None:
            self._cleared = True
            self._again.set()
        elif self._changed is not None:
            self._changed.add(device_id)

    async def run(self) -> None:
        """Read the registry once the intake listens for changes (its listener says so, as
        after any reconnect, by clearing the cache: nothing read before can miss a change),
        then every refresh_s, and at once after each clear; until cancelled. A failed read is
        logged and tried again; the gateway goes on with lookups on demand meanwhile."""
        wait = self.refresh_s
        while True:
            try:
                await asyncio.wait_for(self._again.wait(), wait)
            except TimeoutError:
                pass
            self._again.clear()
            wait = self.refresh_s
            try:
                await self.read()
            except Exception as exc:  # noqa: BLE001 - the mirror only saves lookups: never stop the gateway
                (log.warning if is_transient(exc) else log.exception)(
                    "device registry not mirrored, looked up on demand meanwhile", error=repr(exc)
                )
                wait = min(RETRY_S, self.refresh_s)

    async def read(self) -> int:
        """Read the registry into the cache, a page at a time; the number of devices read."""
        started = time.monotonic()
        self._changed, self._cleared = set(), False
        try:
            after, n, room = "", 0, self.cache.max_entries
            while n < room:
                page = await self.registry.page(after, min(PAGE, room - n))
                if not page:
                    break
                self.cache.put_many([d for d in page if d.device_id not in self._changed], time.monotonic())
                n += len(page)
                after = page[-1].device_id
            if self._cleared:
                self.cache.clear()  # a change may have been missed while reading: read again
                self._again.set()
                return n
            for device_id in self._changed:
                self.cache.forget(device_id)
        finally:
            self._changed = None
        self.reads += 1
        self.loaded.set()
        log.info(
            "device registry mirrored",
            devices=n,
            seconds=round(time.monotonic() - started, 3),
            cache_full=n >= self.cache.max_entries,
        )
        return n

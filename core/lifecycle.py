"""Long-running components: an explicit run/stop contract and a supervisor for several.

Every component's `run()` works until `request_stop()` is called, then drains what it has in
hand (commits, acks, closes) and returns. The supervisor runs components side by side; when
one fails or a stop is asked for, it asks all to stop, waits for them up to a grace period,
cancels what is left, and re-raises the first failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Iterable
from typing import Any

import structlog

log = structlog.get_logger(__name__)


class Component:
    name: str = "component"

    def __init__(self) -> None:
        self._stop = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stop(self, timeout: float | None = None) -> bool:
        """Sleep until a stop is asked for (True) or the timeout passes (False)."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def idle(self, wakeup: Awaitable[Any]) -> None:
        """Wait for `wakeup` or a stop request, whichever comes first."""
        await first_of(wakeup, self._stop.wait())

    async def run(self) -> None:
        raise NotImplementedError


async def first_of(*aws: Awaitable[Any]) -> None:
    """Wait until the first of `aws` completes; cancel and await the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def supervise(
    components: Iterable[Component],
    *,
    stop: asyncio.Event | None = None,
    grace_s: float = 15.0,
) -> None:
    comps = list(components)
    stop = stop or asyncio.Event()
    tasks: dict[asyncio.Task[Any], Component] = {
        asyncio.create_task(c.run(), name=f"component.{c.name}"): c for c in comps
    }
    stop_waiter: asyncio.Task[Any] = asyncio.create_task(stop.wait(), name="supervisor.stop")
    first_error: BaseException | None = None
    try:
        pending = set(tasks)
        done, _ = await asyncio.wait(pending | {stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t is stop_waiter:
                continue
            comp = tasks[t]
            if t.cancelled():
                continue
            exc = t.exception()
            if exc is not None:
                first_error = first_error or exc
                log.error("component failed", component=comp.name, error=repr(exc))
            else:
                log.info("component finished", component=comp.name)
    finally:
        for c in comps:
            c.request_stop()
        remaining = [t for t in tasks if not t.done()]
        if remaining:
            done, still = await asyncio.wait(remaining, timeout=grace_s)
            for t in still:
                log.warning("component did not stop in time, cancelling", component=tasks[t].name)
                t.cancel()
            if still:
                await asyncio.wait(still)
        for t, comp in tasks.items():
            if t.done() and not t.cancelled() and t.exception() and first_error is None:
                first_error = t.exception()
                log.error("component failed", component=comp.name, error=repr(first_error))
        stop_waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stop_waiter
    if first_error is not None:
        raise first_error


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM ask for a graceful stop; a second one exits at once."""
    loop = asyncio.get_running_loop()

    def handler(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second signal, exiting now", signal=sig.name)
            os._exit(130)
        log.info("stopping", signal=sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, sig)

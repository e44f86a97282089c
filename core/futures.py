"""Waiting for many publish futures at once."""

from __future__ import annotations

import asyncio
from typing import Any


async def outcomes(futures: list[asyncio.Future[Any]], timeout: float) -> list[Any]:
    """Each future's result, or its exception, once all are done or `timeout` has passed; one
    still pending then is cancelled and gives TimeoutError. One wait for the lot: a
    `wait_for` per future is a task and a timer each (500 of them for a relay batch)."""
    if not futures:
        return []
    _, pending = await asyncio.wait(futures, timeout=timeout)
    for f in pending:
        f.cancel()
    out: list[Any] = []
    for f in futures:
        if f in pending:
            out.append(TimeoutError(f"not done within {timeout} s"))
        elif f.cancelled():
            out.append(asyncio.CancelledError())
        else:
            exc = f.exception()
            out.append(exc if exc is not None else f.result())
    return out

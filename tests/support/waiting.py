"""Waiting for an outcome of the real services."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def wait_until(fn: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `await fn()` until it gives something true; TimeoutError with the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s (last value {value!r})")
        await asyncio.sleep(interval)

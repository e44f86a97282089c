"""core.futures.outcomes: every future's result or exception, in order, within one timeout."""

from __future__ import annotations

import asyncio
import time

from core.futures import outcomes


async def test_results_errors_and_late_ones_in_the_given_order() -> None:
    loop = asyncio.get_running_loop()
    ok, failed, late = loop.create_future(), loop.create_future(), loop.create_future()
    ok.set_result("puback")
    loop.call_later(0.01, failed.set_exception, ConnectionError("broker gone"))
    t0 = time.monotonic()
    got = await outcomes([late, ok, failed], 0.2)
    assert 0.2 <= time.monotonic() - t0 < 1.0  # waited once for the lot, not once per future
    assert isinstance(got[0], TimeoutError)
    assert got[1] == "puback"
    assert isinstance(got[2], ConnectionError)
    assert late.cancelled()  # what was still pending is given up


async def test_returns_as_soon_as_all_are_done() -> None:
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(500)]
    for i, f in enumerate(futures):
        loop.call_later(0.001, f.set_result, i)
    t0 = time.monotonic()
    assert await outcomes(futures, 30.0) == list(range(500))
    assert time.monotonic() - t0 < 5.0
    assert await outcomes([], 30.0) == []

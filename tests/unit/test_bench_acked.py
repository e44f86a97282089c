"""bench.load.count_acked: what a step counts as acknowledged by the broker."""

from __future__ import annotations

import asyncio

from bench.load import count_acked


async def test_counts_the_successes_and_waits_only_for_the_open_ones() -> None:
    loop = asyncio.get_running_loop()
    futs: list[asyncio.Future[None]] = [loop.create_future() for _ in range(6)]
    futs[0].set_result(None)
    futs[1].set_result(None)
    futs[2].set_exception(ConnectionError("lost"))
    futs[3].cancel()
    loop.call_later(0.05, futs[4].set_result, None)  # acknowledged while the step is counted
    # futs[5] is never acknowledged: the count stops waiting at the timeout
    t0 = loop.time()
    assert await count_acked(futs, timeout=0.3) == 3
    assert 0.25 <= loop.time() - t0 < 2.0


async def test_nothing_open_returns_at_once() -> None:
    loop = asyncio.get_running_loop()
    futs: list[asyncio.Future[None]] = [loop.create_future() for _ in range(1000)]
    for f in futs:
        f.set_result(None)
    t0 = loop.time()
    assert await count_acked(futs, timeout=60) == 1000
    assert loop.time() - t0 < 1.0

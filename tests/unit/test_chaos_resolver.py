"""The fault suite's resolver outlives any error its pool raises (chaos/ledger.py Resolver):
once it stopped after an asyncpg InternalClientError, and every scenario after it judged
presses that had joined old incidents instead of opening their own."""

from __future__ import annotations

import asyncio

import asyncpg

from chaos.ledger import Resolver


class Pool:
    """Raises what a Postgres restart left behind on the first call, then answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def execute(self, *args: object, timeout: float | None = None) -> str:
        self.calls += 1
        if self.calls == 1:
            raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
        return "UPDATE 0"


def test_the_resolver_goes_on_after_an_error_it_did_not_expect() -> None:
    async def go() -> tuple[int, int, str, bool]:
        pool = Pool()
        resolver = Resolver(pool)  # type: ignore[arg-type]
        resolver.start()
        await asyncio.sleep(1.2)  # the failed call, then two more every 0.5 s
        alive = resolver.task is not None and not resolver.task.done()
        await resolver.stop()
        return pool.calls, resolver.errors, resolver.last_error, alive

    calls, errors, last_error, alive = asyncio.run(go())
    assert alive
    assert calls >= 3
    assert errors == 1
    assert "InternalClientError" in last_error

"""What `run_components` sets up in a component process before the components start."""

from __future__ import annotations

import asyncio
import gc
import signal

import pytest

from core.lifecycle import Component
from dispatch.components import YOUNG_COLLECTION_EVERY, run_components

pytestmark = pytest.mark.stack


class ThresholdProbe(Component):
    """Notes the collector's thresholds the components run with, then asks for a stop."""

    name = "threshold-probe"

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__()
        self.process_stop = stop
        self.seen: tuple[int, int, int] | None = None

    async def run(self) -> None:
        self.seen = gc.get_threshold()
        self.process_stop.set()
        await self.wait_stop()


async def test_components_run_with_young_collections_every_20000_allocations(env) -> None:  # type: ignore[no-untyped-def]
    before = gc.get_threshold()
    stop = asyncio.Event()
    probe = ThresholdProbe(stop)
    try:
        await asyncio.wait_for(run_components((), env.settings, stop=stop, extra=[probe]), 30)
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    assert probe.seen == YOUNG_COLLECTION_EVERY == (20_000, 10, 10)

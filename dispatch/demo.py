"""`dispatch demo`: every component and the device simulator in one process, with a live
summary on the terminal. Ctrl-C stops it cleanly."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from core import db
from core.lifecycle import Component
from core.settings import Settings
from dispatch.components import ALL, run_components
from dispatch.simulator import SimStats, Simulator, load_demo_devices, percentile


class SimulatorComponent(Component):
    name = "simulator"

    def __init__(self, settings: Settings, devices: int, rate: float) -> None:
        super().__init__()
        self.settings = settings
        self.devices = devices
        self.rate = rate
        self.started = time.monotonic()

    async def run(self) -> None:
        conn = await db.connect(self.settings.database_url)
        try:
            devices = await load_demo_devices(conn, self.settings, self.devices)
        finally:
            await conn.close()
        await asyncio.sleep(2.0)  # let the gateway subscribe first
        sim = Simulator(self.settings, devices, rate=self.rate, on_tick=self._show, respond=True)
        stats = await sim.run(stop=self._stop)
        self._show(stats)
        sys.stdout.write("\n")

    def _show(self, s: SimStats) -> None:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"

        line = (
            f"[{time.monotonic() - self.started:6.0f}s] presses {s.presses_sent}"
            f" | accepted {s.receipts.get('accepted', 0)}"
            f" | incidents opened {s.receipts.get('incident_opened', 0)}"
            f" joined {s.receipts.get('incident_joined', 0)}"
            f" | rejected {s.receipts.get('rejected', 0)}"
            f" | officers notified {s.notifications}"
            f" | escalations {s.escalations}"
            f" | officer actions {s.officer_actions}"
            f" | closed {s.receipts.get('resolved', 0)}"
            f" | press->notification p50 {ms(percentile(s.to_notification_ms, 0.5))} ms"
            f" p99 {ms(percentile(s.to_notification_ms, 0.99))} ms"
        )
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


async def run_demo(settings: Settings, *, devices: int, rate: float) -> Any:
    from dispatch.demo_city import DEMO_OFFICER_PASSWORD

    print("Ping'an Dispatch demo: all components + device simulator. Ctrl-C stops.")
    print(
        f"Duty desk: http://{settings.http_host}:{settings.http_port}/  sign in as do-990100-1 (city centre), "
        f"do-990102001001-1 (a community centre) or go-990102001001001 (a grid officer); "
        f"password {DEMO_OFFICER_PASSWORD}"
    )
    await run_components(
        ALL,
        settings,
        extra=[SimulatorComponent(settings, devices, rate)],
    )

"""All components in-process, started and stopped by a test fixture."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from core import kafka
from core.lifecycle import Component, supervise
from core.settings import Settings
from dispatch.api.app import ApiServer
from dispatch.components import wire_local_notifier
from gateways.http_ingest import HttpIngest
from gateways.mqtt_gateway import MqttGateway
from gateways.officer_actions_gateway import OfficerActionsGateway
from workers.escalation_timer import EscalationTimer
from workers.escalation_worker import EscalationWorker
from workers.notifier import Notifier
from workers.outbox_relay import OutboxRelay
from workers.rejection_recorder import RejectionRecorder


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool[Any],
        *,
        names: tuple[str, ...] = (
            "gateway",
            "worker",
            "notifier",
            "relay",
            "timer",
            "officer-actions",
            "api",
            "ingest",
        ),
    ) -> None:
        self.settings = settings
        self.components: list[Component] = []
        if "gateway" in names:
            self.gateway = MqttGateway(settings, pool)
            self.components.append(self.gateway)
        if "worker" in names:
            self.worker = EscalationWorker(settings, pool)
            self.recorder = RejectionRecorder(settings, pool)
            self.components += [self.worker, self.recorder]
        if "notifier" in names:
            self.notifier = Notifier(settings, pool)
            self.components.append(self.notifier)
        if "relay" in names:
            self.relay = OutboxRelay(settings, pool)
            self.components.append(self.relay)
        if "ingest" in names:
            self.ingest = HttpIngest(settings, pool)
            self.components.append(self.ingest)
        if "api" in names:
            self.api = ApiServer(settings, pool)
            self.components.append(self.api)
        if "officer-actions" in names:
            self.actions = OfficerActionsGateway(settings, pool)
            self.components.append(self.actions)
        if "timer" in names:
            self.timer = EscalationTimer(settings, pool)
            self.components.append(self.timer)
        wire_local_notifier(self.components, settings, pool)  # as `dispatch` runs them
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await kafka.ensure_topics(self.settings)
        self._task = asyncio.create_task(supervise(self.components, stop=self._stop), name="test.pipeline")
        readies = [c.ready.wait() for c in self.components if hasattr(c, "ready")]
        waiter = asyncio.gather(*readies)
        done, _ = await asyncio.wait({waiter, self._task}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            self._task.result()  # raises what failed
        if waiter not in done:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            raise TimeoutError("pipeline did not become ready in 60 s")
        # The worker's consumer has joined its group once it has an assignment.
        await asyncio.sleep(0.5)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

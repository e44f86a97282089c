"""A long-running aiohttp server as a component: bind, serve until asked to stop, finish the
requests in hand, close. Subclasses build the app and may hold resources around it."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from core.lifecycle import Component

log = structlog.get_logger(__name__)


class WebServer(Component):
    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host = host
        self.requested_port = port
        self.port: int | None = None  # the bound port (port 0 asks for any free one)
        self.ready = asyncio.Event()

    async def build(self) -> web.Application:
        raise NotImplementedError

    async def close(self) -> None:
        """Release what build() took (after the server has stopped)."""

    async def run(self) -> None:
        try:
            runner = web.AppRunner(await self.build(), access_log=None)
            await runner.setup()
            try:
                site = web.TCPSite(runner, self.host, self.requested_port)
                await site.start()
                sockets = getattr(site._server, "sockets", None) or []
                self.port = sockets[0].getsockname()[1] if sockets else self.requested_port
                log.info("listening", component=self.name, host=self.host, port=self.port)
                self.ready.set()
                await self._stop.wait()
            finally:
                await runner.cleanup()
        finally:
            await self.close()

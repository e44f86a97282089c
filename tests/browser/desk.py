"""Helpers of the browser tests: Debian's headless Chromium, desks signed in as demo
officers, devices that press, and a TCP proxy whose cable a test can pull."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from playwright.async_api import Browser, BrowserContext, Page, expect

from dispatch.demo_city import DEMO_OFFICER_PASSWORD
from schemas import topics
from tests.support.mqtt_clients import Collector, event_payload

CHROMIUM = Path("/usr/bin/chromium")
# This machine has no network but the package registries: Chromium must not try its own
# connections (component updates, sync, QUIC probes), and it runs as root in a container.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Desk:
    """One signed-in officer in a browser context of their own (own cookies, own storage)."""

    officer_id: str
    context: BrowserContext
    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)

    def row(self, incident_id: str) -> Any:
        return self.page.locator(f'[data-testid="incident-row"][data-incident-id="{incident_id}"]')

    async def close(self) -> None:
        await self.context.close()


async def open_desk(
    browser: Browser,
    base_url: str,
    officer_id: str,
    *,
    path: str = "/queue",
    locale: str = "zh-CN",
    sign_in: bool = True,
) -> Desk:
    """A new context at `path`, signed in over the API (the cookie lands in the context)."""
    context = await browser.new_context(
        base_url=base_url, locale=locale, timezone_id="Asia/Shanghai", viewport={"width": 1366, "height": 900}
    )
    page = await context.new_page()
    desk = Desk(officer_id, context, page, base_url)
    page.on("pageerror", lambda exc: desk.errors.append(str(exc)))
    # Everything is served from the one origin under a strict CSP: a violation is a bug.
    page.on(
        "console",
        lambda msg: desk.errors.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    if sign_in:
        r = await context.request.post(
            "/api/v1/auth/sign-in", data={"officer_id": officer_id, "password": DEMO_OFFICER_PASSWORD}
        )
        assert r.status == 200, await r.text()
        await page.goto(path)
    return desk


async def wait_connected(desk: Desk, timeout_ms: float = 5000) -> None:
    await expect(desk.page.get_by_test_id("connection")).to_have_attribute(
        "data-state", "connected", timeout=timeout_ms
    )


# ---------------------------------------------------------------- devices


@dataclass
class Device:
    device_id: str
    collector: Collector

    async def press(self, type_: str = "alarm.panic") -> dict[str, Any]:
        """Publishes an event as the device does and waits for the incident_opened receipt."""
        await self.collector.client.publish(
            topics.device_events(self.device_id), orjson.dumps(event_payload(self.device_id, type_)), qos=1
        )
        _, opened = await self.collector.wait_for(lambda r: r["status"] == "incident_opened", timeout=5)
        return opened

    async def publish(self, type_: str = "alarm.panic") -> None:
        await self.collector.client.publish(
            topics.device_events(self.device_id), orjson.dumps(event_payload(self.device_id, type_)), qos=1
        )


# ---------------------------------------------------------------- a cable to pull


class CuttableProxy:
    """A TCP proxy in front of the API. `cut()` drops every connection at once and refuses
    new ones (as a dead network does); `restore()` lets connections through again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        with contextlib.suppress(OSError):
            if dst.can_write_eof():
                dst.write_eof()

    def cut(self) -> None:
        self.is_cut = True
        for w in list(self._writers):
            w.transport.abort()

    def restore(self) -> None:
        self.is_cut = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

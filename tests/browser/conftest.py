"""Browser fixtures: the browser, the pages' address, devices, a cuttable proxy."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from dispatch.credentials import add_device, sync_broker_credentials
from tests.browser.desk import CHROMIUM, CHROMIUM_ARGS, CuttableProxy, Device
from tests.conftest import REPO
from tests.support.mqtt_clients import device_client

SCREENSHOTS = REPO / "artifacts" / "screenshots"


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():  # `make test` installs it first; a bare pytest run does it here
        subprocess.run([str(REPO / "deploy" / "browser.sh")], check=True)
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium_path: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(chromium_path), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture(scope="module")
def base_url(pipeline: Any) -> str:
    return f"http://127.0.0.1:{pipeline.api.port}"


@pytest.fixture(scope="module")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
async def devices(env: Any) -> AsyncIterator[Any]:
    """make(grid, kind, address, note) -> a connected Device with its own credentials."""
    made: list[Device] = []

    async def make(grid: str, kind: str = "panic_button", address: str = "测试楼 1-101", note: str = "") -> Device:
        device_id = f"b-{uuid.uuid4().hex[:12]}"
        async with env.pool.acquire() as conn:
            p = await add_device(
                conn, device_id=device_id, grid_code=grid, kind=kind, address=address, resident_note=note
            )
        async with env.pool.acquire() as conn:
            await sync_broker_credentials(conn, env.settings)
        await env.broker_knows(device_id, p.password)
        collector = await device_client(env.settings, device_id, p.password)
        d = Device(device_id, collector)
        made.append(d)
        return d

    try:
        yield make
    finally:
        for d in made:
            await d.collector.close()


@pytest.fixture
async def proxy(pipeline: Any) -> AsyncIterator[CuttableProxy]:
    p = CuttableProxy(pipeline.api.port)
    await p.start()
    try:
        yield p
    finally:
        await p.close()

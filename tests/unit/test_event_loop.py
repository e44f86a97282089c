"""The event loop a process runs on (core/event_loop.py, PINGAN_EVENT_LOOP)."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from core import event_loop
from core.errors import ConfigError
from core.settings import Settings


async def _loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default() -> None:
    assert Settings().event_loop == "uvloop"
    assert event_loop.run(_loop_type(), Settings().event_loop) is uvloop.Loop


def test_the_standard_loop_is_one_setting_away() -> None:
    loop = Settings.from_env({"PINGAN_EVENT_LOOP": "asyncio"}).event_loop
    assert not issubclass(event_loop.run(_loop_type(), loop), uvloop.Loop)


def test_an_unknown_loop_is_a_clear_error_and_the_coroutine_is_closed() -> None:
    coro = _loop_type()
    with pytest.raises(ConfigError, match="PINGAN_EVENT_LOOP='trio' is not an event loop: choose from uvloop, asyncio"):
        event_loop.run(coro, "trio")
    assert coro.cr_frame is None  # closed, not left to warn that it was never awaited

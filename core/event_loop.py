"""The event loop a process runs on: uvloop by default (`PINGAN_EVENT_LOOP=uvloop`), or the
standard library's (`asyncio`).

uvloop runs the same asyncio programs with its loop, transports and timers in C (libuv): the
readiness callbacks of the MQTT client, asyncpg's and aiokafka's protocols and the web server
all cost less Python per message. The standard loop stays one setting away, for a platform
without uvloop's wheels or to compare the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from core.errors import ConfigError

T = TypeVar("T")

LOOPS = ("uvloop", "asyncio")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop called `name` (None: the standard library's)."""
    if name == "asyncio":
        return None
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    raise ConfigError(f"PINGAN_EVENT_LOOP={name!r} is not an event loop: choose from {', '.join(LOOPS)}")


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """`asyncio.run(main)` on the loop called `loop`."""
    try:
        factory = loop_factory(loop)
    except ConfigError:
        main.close()  # never awaited: say so without a RuntimeWarning on top of the error
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)

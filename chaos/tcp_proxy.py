"""A small TCP proxy that can cut the network: listen port -> upstream host:port.

The components of a fault-suite run reach Kafka and Postgres through one of these, so the
suite can take the network away for a few seconds and give it back, in two flavours:

- "reset": every live connection is reset (RST on both sides) and the listening socket is
  closed, so new connections are refused at once. The polite failure: clients notice now.
- "blackhole": nothing passes any more, in either direction, and nothing is reset: live
  connections hang, new ones are accepted and then hear nothing. After `restore()` the
  connections from before and during the cut stay silent for good (their state is lost,
  as after a failover or a dropped NAT/conntrack entry): only a client's own timeout gets
  it out. A close still gets through once restored (the server then ends the session, and
  the client learns when the server closes). Connections opened after `restore()` work.

`TcpProxy(listen_port, upstream_host, upstream_port)`; `await start()`, `cut(mode)`,
`restore()`, `await stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["blackhole", "reset"]
MODES: tuple[Mode, ...] = ("blackhole", "reset")
_CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with an RST (SO_LINGER 0), not a FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None and not writer.is_closing():
        writer.close()


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    dead: bool = False  # blackholed: nothing is forwarded any more
    client_closed: bool = False
    upstream_closed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


@dataclass
class ProxyStats:
    accepted: int = 0
    blackholed: int = 0
    reset: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class TcpProxy:
    def __init__(
        self,
        listen_port: int,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_host: str = "127.0.0.1",
        name: str = "proxy",
    ) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.name = name
        self.cut_mode: Mode | None = None
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    async def start(self) -> None:
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, self.listen_host, self.listen_port, reuse_address=True
            )

    async def _unlisten(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def stop(self) -> None:
        await self._unlisten()
        for c in list(self._conns):
            self._drop(c, reset=False)
        tasks = [t for c in self._conns for t in c.tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._conns.clear()

    def live_connections(self) -> int:
        return sum(1 for c in self._conns if not c.dead)

    async def cut(self, mode: Mode) -> None:
        """Take the network away. Returns once the cut is in force."""
        if mode not in MODES:
            raise ValueError(f"unknown cut mode {mode!r}")
        self.cut_mode = mode
        if mode == "reset":
            await self._unlisten()  # new connections: refused
            for c in list(self._conns):
                self._drop(c, reset=True)
                self.stats.reset += 1
        else:
            for c in self._conns:
                if not c.dead:
                    c.dead = True
                    self.stats.blackholed += 1

    async def restore(self) -> None:
        """Give the network back: new connections work again (blackholed ones stay silent)."""
        mode, self.cut_mode = self.cut_mode, None
        if mode == "reset":
            await self._listen()
        for c in list(self._conns):
            # Closes made during the cut get through now.
            if c.client_closed:
                self._drop(c, reset=False)
            elif c.upstream_closed:
                _close(c.client)

    def _drop(self, c: _Conn, *, reset: bool) -> None:
        if reset:
            _reset(c.client)
            _reset(c.upstream)
        else:
            _close(c.client)
            _close(c.upstream)
        self._conns.discard(c)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        if self.cut_mode == "reset":  # accepted just before the listener closed
            _reset(writer)
            return
        c = _Conn(client=writer)
        self._conns.add(c)
        if self.cut_mode == "blackhole":
            c.dead = True
            self.stats.blackholed += 1
            c.tasks.append(asyncio.current_task())  # type: ignore[arg-type]
            await self._pump(c, reader, None, up=True)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port), 10.0
            )
        except (OSError, TimeoutError):
            _reset(writer)  # the upstream refuses: so does the proxy
            self._conns.discard(c)
            return
        if c not in self._conns:  # reset while connecting
            _reset(up_writer)
            return
        c.upstream = up_writer
        if self.cut_mode == "blackhole":
            c.dead = True
        c.tasks = [
            asyncio.create_task(self._pump(c, reader, up_writer, up=True), name=f"{self.name}.up"),
            asyncio.create_task(self._pump(c, up_reader, writer, up=False), name=f"{self.name}.down"),
        ]

    async def _pump(
        self, c: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, *, up: bool
    ) -> None:
        """Copy one direction until EOF; on a dead connection read and drop."""
        try:
            while True:
                try:
                    data = await reader.read(_CHUNK)
                except (OSError, ConnectionError):
                    data = b""
                if not data:
                    break
                if c.dead or writer is None or c not in self._conns:
                    continue
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                writer.write(data)
                try:
                    await writer.drain()
                except (OSError, ConnectionError):
                    break
        finally:
            # This side closed. A cut holds the news back until restore().
            if up:
                c.client_closed = True
            else:
                c.upstream_closed = True
            if c in self._conns and self.cut_mode is None:
                if up:
                    self._drop(c, reset=False)
                else:
                    _close(c.client)
                    if c.client_closed:
                        self._drop(c, reset=False)

"""The fault suite's TCP proxy (chaos/tcp_proxy.py) against a local echo server."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from chaos.tcp_proxy import TcpProxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    upstream_port = server.sockets[0].getsockname()[1]
    p = TcpProxy(free_port(), "127.0.0.1", upstream_port)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()
        server.close()


async def roundtrip(port: int, payload: bytes, timeout: float = 1.0) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    finally:
        writer.close()


async def test_forwards_both_ways(proxy: TcpProxy) -> None:
    assert await roundtrip(proxy.listen_port, b"ping") == b"ping"


async def test_reset_breaks_live_connections_and_refuses_new_ones(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    await proxy.cut("reset")
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 1.0)
    with pytest.raises(ConnectionRefusedError):
        await roundtrip(proxy.listen_port, b"b")
    await proxy.restore()
    assert await roundtrip(proxy.listen_port, b"c") == b"c"
    writer.close()


async def test_blackhole_hangs_and_old_connections_stay_silent(proxy: TcpProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    await proxy.cut("blackhole")
    writer.write(b"b")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(1), 0.3)
    with pytest.raises(TimeoutError):  # accepted, then nothing
        await roundtrip(proxy.listen_port, b"x", timeout=0.3)
    await proxy.restore()
    writer.write(b"c")
    with pytest.raises(TimeoutError):  # state lost: the old connection stays silent
        await asyncio.wait_for(reader.readexactly(1), 0.3)
    assert await roundtrip(proxy.listen_port, b"d") == b"d"  # a new one works
    writer.close()

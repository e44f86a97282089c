"""A lean MQTT 3.1.1 client for the load generator's simulated devices.

The benchmark simulates thousands of devices from one process; with a full client library
per device (its own objects per packet, a writer registration per publish, a timer per
connection) the generator spends more CPU than the system it measures. This client does only
what a simulated device needs (connect with its credentials, subscribe, QoS 1 publish with
PUBACK futures, receive QoS 0/1 with automatic PUBACK, keepalive pings), as an asyncio
protocol: one `data_received` parses whatever has arrived, a publish is one `write`.

Not for production use: no reconnect, no session resumption, no MQTT 5 properties. The
platform's own connections use `core.mqtt`.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import Any, cast

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14

# (topic, payload, monotonic time of arrival)
OnMessage = Callable[[str, bytes, float], None]


class LeanMqttError(Exception):
    pass


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _packet(first_byte: int, body: bytes) -> bytes:
    n = len(body)
    if n < 128:  # most packets: one byte of length
        return bytes((first_byte, n)) + body
    length = bytearray()
    while True:
        byte, n = n % 128, n // 128
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([first_byte]) + bytes(length) + body


class LeanClient(asyncio.Protocol):
    def __init__(self, client_id: str, on_message: OnMessage | None = None) -> None:
        self.client_id = client_id
        self.on_message = on_message
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._connack: asyncio.Future[None] | None = None
        self._suback: dict[int, asyncio.Future[None]] = {}
        self._closed: asyncio.Future[None] | None = None
        self._topics: dict[str, bytes] = {}  # topic -> its encoded form (a device uses two or three)

    # ------------------------------------------------------------ public

    async def connect(
        self, host: str, port: int, username: str, password: str, *, keepalive: int = 120, timeout: float = 30
    ) -> None:
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        self._closed = loop.create_future()
        await loop.create_connection(lambda: self, host, port)
        flags = 0x02 | 0x80 | 0x40  # clean session, username, password
        body = (
            _utf8("MQTT")
            + bytes([4, flags])
            + struct.pack("!H", keepalive)
            + _utf8(self.client_id)
            + _utf8(username)
            + _utf8(password)
        )
        self._write(_packet(CONNECT << 4, body))
        await asyncio.wait_for(self._connack, timeout)

    async def subscribe(self, topic: str, qos: int = 1, timeout: float = 30) -> None:
        mid = self._mid()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._suback[mid] = fut
        self._write(_packet((SUBSCRIBE << 4) | 0x02, struct.pack("!H", mid) + _utf8(topic) + bytes([qos])))
        await asyncio.wait_for(fut, timeout)

    def publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """QoS 1 publish; the future resolves at the broker's PUBACK."""
        mid = self._mid()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._transport is None or self._transport.is_closing():
            fut.set_exception(LeanMqttError("not connected"))
            return fut
        self._pending[mid] = fut
        encoded = self._topics.get(topic)
        if encoded is None:
            encoded = self._topics[topic] = _utf8(topic)
        self._write(_packet((PUBLISH << 4) | 0x02, encoded + mid.to_bytes(2, "big") + payload))
        return fut

    def ping(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"\xc0\x00")

    async def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"\xe0\x00")
            self._transport.close()
        if self._closed is not None:
            await asyncio.shield(self._closed)

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio.Transport, only like one).
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        err = LeanMqttError(f"connection lost: {exc!r}")
        for fut in [*self._pending.values(), *self._suback.values(), self._connack]:
            if fut is not None and not fut.done():
                fut.set_exception(err)
        self._pending.clear()
        self._suback.clear()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        now = time.monotonic()
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            # remaining length: 1 to 4 bytes, 7 bits each, least significant first
            length, shift, i, complete = 0, 0, pos + 1, False
            while i < end and i < pos + 5:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    complete = True
                    break
            if not complete or end - i < length:
                break  # the rest of this packet has not arrived yet
            self._handle(buf[pos], bytes(buf[i : i + length]), now)
            pos = i + length
        if pos:
            del buf[:pos]

    def _handle(self, first: int, body: bytes, now: float) -> None:
        kind = first >> 4
        if kind == PUBLISH:
            qos = (first >> 1) & 0x03
            tlen = struct.unpack_from("!H", body)[0]
            topic = body[2 : 2 + tlen].decode()
            off = 2 + tlen
            if qos:
                mid = body[off : off + 2]
                off += 2
                self._write(b"\x40\x02" + mid)
            if self.on_message is not None:
                self.on_message(topic, body[off:], now)
        elif kind == PUBACK:
            fut = self._pending.pop(struct.unpack_from("!H", body)[0], None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif kind == CONNACK:
            assert self._connack is not None
            if body[1] != 0:
                self._connack.set_exception(LeanMqttError(f"connection refused, return code {body[1]}"))
            else:
                self._connack.set_result(None)
        elif kind == SUBACK:
            fut = self._suback.pop(struct.unpack_from("!H", body)[0], None)
            if fut is not None and not fut.done():
                if body[2] == 0x80:
                    fut.set_exception(LeanMqttError("subscription refused"))
                else:
                    fut.set_result(None)

    def _write(self, data: bytes) -> None:
        if self._transport is None:
            raise LeanMqttError("not connected")
        self._transport.write(data)

    def _mid(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id


async def keep_alive(clients: Any, every_s: float = 60.0) -> None:
    """Ping every client every `every_s` seconds (run as one task for a whole fleet)."""
    while True:
        await asyncio.sleep(every_s)
        for c in list(clients):
            c.ping()

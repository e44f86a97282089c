"""The benchmark's lean MQTT client parses packets however the bytes arrive."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from bench.lean_mqtt import PUBLISH, LeanClient, _packet, _utf8
from bench.load import LeanOfficerProbe
from core.settings import Settings


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def publish_packet(topic: str, payload: bytes, mid: int | None) -> bytes:
    if mid is None:
        return _packet(PUBLISH << 4, _utf8(topic) + payload)
    return _packet((PUBLISH << 4) | 0x02, _utf8(topic) + mid.to_bytes(2, "big") + payload)


@given(
    messages=st.lists(
        st.tuples(st.text(min_size=1, max_size=40), st.binary(max_size=300), st.none() | st.integers(1, 65535)),
        min_size=1,
        max_size=8,
    ),
    cuts=st.lists(st.integers(1, 400), max_size=20),
)
def test_publishes_split_anywhere_arrive_whole_in_order_and_qos1_is_acked(
    messages: list[tuple[str, bytes, int | None]], cuts: list[int]
) -> None:
    got: list[tuple[str, bytes]] = []
    client = LeanClient("dev", on_message=lambda t, p, _: got.append((t, p)))
    transport = FakeTransport()
    client.connection_made(transport)
    stream = b"".join(publish_packet(t, p, m) for t, p, m in messages)
    pos = 0
    for cut in cuts:
        client.data_received(stream[pos : pos + cut])
        pos += cut
    client.data_received(stream[pos:])
    assert got == [(t, p) for t, p, _ in messages]
    acks = [m for _, _, m in messages if m is not None]
    assert transport.written == [b"\x40\x02" + m.to_bytes(2, "big") for m in acks]


def test_remaining_length_uses_several_bytes_for_large_packets() -> None:
    body = b"x" * 20000
    pkt = _packet(0x30, body)
    assert pkt[1] & 0x80 and pkt[2] & 0x80 and not pkt[3] & 0x80
    assert len(pkt) == 1 + 3 + len(body)


async def test_the_officer_probe_pings_while_nobody_is_paged() -> None:
    # Minutes of heartbeats page nobody: a probe that sent nothing all that time was dropped by
    # the broker (1.5 × its keepalive), and the burst after it waited for pages it never saw.
    probe = LeanOfficerProbe(Settings(), fleet=None, ping_every_s=0.01)  # type: ignore[arg-type]
    transport = FakeTransport()

    async def connected(*_: object, **__: object) -> None:
        probe.client.connection_made(transport)

    probe.client.connect = connected  # type: ignore[method-assign]
    probe.client.subscribe = connected  # type: ignore[method-assign]
    await probe.start()
    await asyncio.sleep(0.1)
    assert probe.connected
    assert transport.written.count(b"\xc0\x00") >= 2  # PINGREQ, again and again
    assert probe._keepalive is not None
    probe._keepalive.cancel()


@given(st.integers(0, 300_000))
def test_remaining_length_is_the_mqtt_variable_byte_integer(n: int) -> None:
    body = b"x" * n
    pkt = _packet(0x30, body)
    length, shift, i = 0, 0, 1
    while True:
        byte = pkt[i]
        length |= (byte & 0x7F) << shift
        shift += 7
        i += 1
        if not byte & 0x80:
            break
    assert length == n and pkt[i:] == body and i - 1 == (1 if n < 128 else 2 if n < 16384 else 3)

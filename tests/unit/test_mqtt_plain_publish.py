"""core.mqtt's short cut for QoS 1 PUBLISH packets without properties: what it takes from the
read buffer is what paho would decode, and it leaves everything else to paho, untouched."""

from __future__ import annotations

import socket
import struct

from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion

from core.mqtt import ReadBufferedSocket


class FakeRaw:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out


def buffered(data: bytes) -> ReadBufferedSocket:
    sock = ReadBufferedSocket(FakeRaw(data))  # type: ignore[arg-type]
    assert sock.recv(0) == b""  # one read fills the buffer and hands out nothing
    assert sock.buffered() == len(data)
    return sock


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish(
    topic: bytes,
    payload: bytes,
    mid: int,
    *,
    qos: int = 1,
    dup: bool = False,
    retain: bool = False,
    props: bytes = b"\x00",
) -> bytes:
    body = struct.pack("!H", len(topic)) + topic + (struct.pack("!H", mid) if qos else b"") + props + payload
    first = 0x30 | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0)
    return bytes([first]) + remaining_length(len(body)) + body


@given(
    topic=st.binary(min_size=1, max_size=300),
    payload=st.binary(max_size=70_000),
    mid=st.integers(1, 65535),
    dup=st.booleans(),
    retain=st.booleans(),
)
def test_what_is_taken_is_what_paho_decodes(topic: bytes, payload: bytes, mid: int, dup: bool, retain: bool) -> None:
    packet = publish(topic, payload, mid, dup=dup, retain=retain)
    sock = buffered(packet + b"\x40\x02\x00\x01")  # a PUBACK behind it
    got = sock.take_plain_publish()
    assert got is not None
    first, rest = packet[0], packet[1:]
    i = 0
    while rest[i] & 0x80:
        i += 1
    paho = _packet.decode_publish(first, rest[i + 1 :], MQTTProtocolVersion.MQTTv5)
    assert (got._topic, got.payload, got.mid, got.dup, got.retain, got.qos) == (
        paho.topic,
        paho.payload,
        paho.mid,
        paho.dup,
        paho.retain,
        paho.qos,
    )
    assert sock.buffered() == 4  # the PUBACK is left, whole, to paho
    assert sock.take_plain_publish() is None and sock.buffered() == 4


def test_packets_back_to_back_are_taken_one_at_a_time() -> None:
    a, b = publish(b"t/a", b"1", 7), publish(b"t/b", b"22", 8, dup=True)
    sock = buffered(a + b)
    first = sock.take_plain_publish()
    assert first is not None and (first.topic, first.payload, first.mid, first.dup) == ("t/a", b"1", 7, False)
    second = sock.take_plain_publish()
    assert second is not None and (second.topic, second.payload, second.mid, second.dup) == ("t/b", b"22", 8, True)
    assert sock.buffered() == 0 and sock.take_plain_publish() is None


def test_everything_else_is_left_to_paho_untouched() -> None:
    whole = publish(b"t", b"x" * 300, 9)
    cases = {
        "a packet still arriving": whole[:-1],
        "only its first byte": whole[:1],
        "QoS 0": publish(b"t", b"x", 0, qos=0),
        "QoS 2": publish(b"t", b"x", 9, qos=2),
        "with properties": publish(b"t", b"x", 9, props=b"\x02\x01\x01"),  # payload format indicator
        "packet id 0": publish(b"t", b"x", 0),
        "a PUBACK": b"\x40\x02\x00\x01",
        "a remaining length of five bytes": b"\x32\xff\xff\xff\xff\x01",
        "a topic longer than the packet": b"\x32\x05\x00\x09ab\x00",
    }
    for why, data in cases.items():
        sock = buffered(data)
        assert sock.take_plain_publish() is None, why
        assert sock.buffered() == len(data), why


def test_the_short_cut_reads_what_a_real_socket_delivered() -> None:
    left, right = socket.socketpair()
    try:
        packets = publish(b"pingan/v1/devices/d-1/events", b'{"type":"device.heartbeat"}', 1) * 3
        left.sendall(packets)
        sock = ReadBufferedSocket(right)
        assert sock.recv(0) == b""  # one read of the socket fills the buffer
        assert sock.buffered() == len(packets)
        taken = [sock.take_plain_publish() for _ in range(3)]
        assert all(t is not None and t.topic == "pingan/v1/devices/d-1/events" for t in taken)
        assert sock.buffered() == 0
    finally:
        left.close()
        right.close()

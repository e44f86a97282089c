"""core.mqtt.ReadBufferedSocket: paho's small reads served from one large read."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core.mqtt import ReadBufferedSocket


class Kernel:
    """A socket's receive side: the chunks the kernel holds, then nothing (or EOF)."""

    def __init__(self, chunks: list[bytes], *, eof: bool = False) -> None:
        self.chunks = list(chunks)
        self.eof = eof
        self.calls = 0

    def recv(self, bufsize: int) -> bytes:
        self.calls += 1
        if not self.chunks:
            if self.eof:
                return b""
            raise BlockingIOError
        chunk = self.chunks.pop(0)
        if len(chunk) > bufsize:
            self.chunks.insert(0, chunk[bufsize:])
        return chunk[:bufsize]


def buffered(kernel: Kernel) -> ReadBufferedSocket:
    return ReadBufferedSocket(kernel)  # type: ignore[arg-type]


def test_a_packets_reads_come_from_one_system_call() -> None:
    # Three PUBACKs (type, length 2, packet id) as one segment: paho reads each in three calls.
    segment = b"\x40\x02\x00\x01" + b"\x40\x02\x00\x02" + b"\x40\x02\x00\x03"
    kernel = Kernel([segment])
    sock = buffered(kernel)
    got = []
    for _ in range(3):
        got += [sock.recv(1), sock.recv(1), sock.recv(2)]
    assert b"".join(got) == segment and got[:3] == [b"\x40", b"\x02", b"\x00\x01"]
    assert kernel.calls == 1 and sock.buffered() == 0
    try:
        sock.recv(1)
    except BlockingIOError:
        pass
    else:
        raise AssertionError("an empty buffer and an empty socket must say so as the socket does")
    assert kernel.calls == 2


def test_eof_reaches_paho_as_an_empty_read() -> None:
    sock = buffered(Kernel([b"\xd0\x00"], eof=True))
    assert sock.recv(1) == b"\xd0" and sock.buffered() == 1
    assert sock.recv(1) == b"\x00"
    assert sock.recv(1) == b""


@given(
    stream=st.binary(min_size=1, max_size=3000),
    cuts=st.lists(st.integers(min_value=1, max_value=700), max_size=20),
    asks=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=200),
)
def test_reads_return_the_stream_in_order_and_no_more_than_asked(
    stream: bytes, cuts: list[int], asks: list[int]
) -> None:
    chunks, at = [], 0
    for c in cuts:
        if at >= len(stream):
            break
        chunks.append(stream[at : at + c])
        at += c
    if at < len(stream):
        chunks.append(stream[at:])
    kernel = Kernel(chunks)
    sock = buffered(kernel)
    out: list[bytes] = []
    ran_dry = False
    for n in asks:
        try:
            piece = sock.recv(n)
        except BlockingIOError:
            ran_dry = True
            break
        assert 1 <= len(piece) <= n
        out.append(piece)
    got = b"".join(out)
    assert stream.startswith(got)
    assert got + (sock._buf[sock._pos :] if sock.buffered() else b"") == stream[: len(got) + sock.buffered()]
    if ran_dry:  # "nothing to read" only once everything the kernel held was read
        assert got == stream
    assert kernel.calls <= len(out) + 1  # never more system calls than reads; usually far fewer

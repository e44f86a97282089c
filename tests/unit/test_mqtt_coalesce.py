"""core.mqtt joins the packets paho queued into one send(), but only packets paho does
nothing with once written."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as paho
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from core.mqtt import _coalesce_out_packets, _queue_puback


def client_with(*packets: dict[str, Any]) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    for p in packets:
        c._out_packet.append({"mid": 0, "info": None, "to_process": len(p["packet"]), **p})
    return c


def pkt(command: int, data: bytes, *, qos: int = 1, pos: int = 0) -> dict[str, Any]:
    return {"command": command, "packet": data, "qos": qos, "pos": pos}


def test_acks_and_qos1_publishes_are_joined_in_order() -> None:
    c = client_with(
        pkt(0x40, b"\x40\x02\x00\x01"), pkt(0x32, b"PUB1"), pkt(0x40, b"\x40\x02\x00\x02"), pkt(0x32, b"PUB2")
    )
    _coalesce_out_packets(c)
    assert len(c._out_packet) == 1
    joined = c._out_packet[0]
    assert joined["packet"] == b"\x40\x02\x00\x01PUB1\x40\x02\x00\x02PUB2"
    assert joined["to_process"] == len(joined["packet"])
    assert joined["pos"] == 0
    # written, paho treats it like a PUBACK: nothing to call back, nothing to close
    assert joined["command"] & 0xF0 == 0x40


def test_one_packet_is_left_as_it_is() -> None:
    only = pkt(0x32, b"PUB1")
    c = client_with(only)
    _coalesce_out_packets(c)
    assert list(c._out_packet) == [{"mid": 0, "info": None, "to_process": 4, **only}]


def test_qos0_publish_disconnect_and_partly_written_packets_are_not_joined() -> None:
    for odd in (pkt(0x30, b"QOS0", qos=0), pkt(0xE0, b"\xe0\x00", qos=0), pkt(0x32, b"HALF", pos=2)):
        c = client_with(pkt(0x40, b"ACK1"), odd, pkt(0x40, b"ACK2"))
        before = [dict(p) for p in c._out_packet]
        _coalesce_out_packets(c)
        assert [dict(p) for p in c._out_packet] == before


@given(st.integers(1, 65535))
def test_a_queued_puback_is_the_entry_paho_ack_queues(mid: int) -> None:
    """core.mqtt queues a message's PUBACK itself (without paho's per-call overhead): the same
    queue entry paho's own ack() would leave, for every message id."""
    ours = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
    theirs = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5, manual_ack=True)
    theirs.on_socket_register_write = lambda *a: None  # queue only: no socket to write to
    _queue_puback(ours, mid)
    assert theirs.ack(mid, 1) == paho.MQTT_ERR_SUCCESS
    assert list(ours._out_packet) == list(theirs._out_packet)

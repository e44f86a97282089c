"""paho's Properties and ReasonCode share their constant tables (core/paho_tables.py) and
behave exactly as the library's own constructors make them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from core import paho_tables

PACKET_TYPES = [
    PacketTypes.CONNECT,
    PacketTypes.CONNACK,
    PacketTypes.PUBLISH,
    PacketTypes.PUBACK,
    PacketTypes.SUBACK,
    PacketTypes.DISCONNECT,
    PacketTypes.WILLMESSAGE,
]


REASON_PACKETS = (PacketTypes.PUBACK, PacketTypes.CONNACK, PacketTypes.SUBACK, PacketTypes.DISCONNECT)


def _reason(packet_type: int, identifier: int) -> tuple[str, int] | str:
    """A reason code's name and value, or the error the library raises for it."""
    try:
        rc = ReasonCode(packet_type, identifier=identifier)
        return (rc.getName(), rc.value)
    except (ValueError, KeyError) as exc:
        return type(exc).__name__


@pytest.fixture
def library_tables() -> Iterator[None]:
    paho_tables.unshare()
    try:
        yield
    finally:
        paho_tables.share()


def _publish_properties() -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    p.MessageExpiryInterval = 30
    p.ContentType = "application/json"
    p.UserProperty = [("a", "1"), ("b", "2")]
    return p


def test_shared_tables_equal_the_librarys(library_tables: None) -> None:
    fresh = {t: paho_tables.tables_of(Properties(t)) for t in PACKET_TYPES}
    codes = {(t, i): _reason(t, i) for t in REASON_PACKETS for i in (0, 16, 128, 135, 151)}
    assert sum(1 for c in codes.values() if isinstance(c, tuple)) >= 8
    paho_tables.share()
    for t in PACKET_TYPES:
        shared = Properties(t)
        assert paho_tables.tables_of(shared) == fresh[t]
        assert shared.packetType == t
    # one set of tables, not a copy per packet
    assert (
        paho_tables.tables_of(Properties(PacketTypes.PUBLISH))[1]
        is paho_tables.tables_of(Properties(PacketTypes.PUBACK))[1]
    )
    for (t, i), outcome in codes.items():
        assert _reason(t, i) == outcome
    assert ReasonCode(PacketTypes.DISCONNECT).getName() == "Normal disconnection"
    assert ReasonCode(PacketTypes.PUBACK, "No matching subscribers").value == 16


def test_properties_pack_and_unpack_the_same(library_tables: None) -> None:
    packed_library = _publish_properties().pack()
    unpacked_library = Properties(PacketTypes.PUBLISH)
    unpacked_library.unpack(packed_library)
    paho_tables.share()
    packed_shared = _publish_properties().pack()
    assert packed_shared == packed_library
    unpacked = Properties(PacketTypes.PUBLISH)
    unpacked.unpack(packed_shared)
    assert unpacked.json() == unpacked_library.json()
    assert unpacked.UserProperty == [("a", "1"), ("b", "2")]


def test_property_values_stay_per_instance() -> None:
    paho_tables.share()
    a, b = Properties(PacketTypes.PUBLISH), Properties(PacketTypes.PUBLISH)
    a.MessageExpiryInterval = 5
    assert not hasattr(b, "MessageExpiryInterval")
    with pytest.raises(Exception, match="Property name must be one of"):
        a.NotAProperty = 1
    with pytest.raises(Exception, match="does not apply"):
        a.SessionExpiryInterval = 10  # a CONNECT property, refused on a PUBLISH


def test_a_publish_decodes_the_same(library_tables: None) -> None:
    """A PUBLISH with properties, as the broker sends it, decoded with either constructor."""
    props = _publish_properties().pack()
    topic = b"pingan/v1/devices/d1/events"
    body = len(topic).to_bytes(2, "big") + topic + (7).to_bytes(2, "big") + props + b'{"x":1}'

    def fields(p: _packet.PublishPacket) -> tuple[object, ...]:
        assert p.properties is not None
        return (p.dup, p.qos, p.retain, p.topic, p.mid, p.properties.json(), bytes(p.payload))

    before = fields(_packet.decode_publish(0x32, body, MQTTProtocolVersion.MQTTv5))
    paho_tables.share()
    after = fields(_packet.decode_publish(0x32, body, MQTTProtocolVersion.MQTTv5))
    assert after == before
    assert after[3:5] == (topic, 7) and after[6] == b'{"x":1}'


def test_clear_removes_every_property_and_keeps_the_tables(library_tables: None) -> None:
    def cleared_with_library_or_shared() -> tuple[object, list[str]]:
        p = _publish_properties()
        p.clear()
        return p.json(), sorted(vars(p))

    library = cleared_with_library_or_shared()
    paho_tables.share()
    shared = cleared_with_library_or_shared()
    assert shared == library
    assert library[0] == {} and library[1] == ["names", "packetType", "properties", "types"]
    # An instance unpacked twice holds only what the second packet had.
    p = Properties(PacketTypes.PUBLISH)
    p.unpack(_publish_properties().pack())
    q = Properties(PacketTypes.PUBLISH)
    q.ContentType = "text/plain"
    p.unpack(q.pack())
    assert p.ContentType == "text/plain"
    assert not hasattr(p, "MessageExpiryInterval") and not hasattr(p, "UserProperty")

"""paho-mqtt 2.x builds constant lookup tables again for every MQTT 5 packet it reads: each
`Properties` (one per PUBLISH and PUBACK) makes a list of 7 type names, a dict of 27 property
names and a dict of 27 property descriptions, and each `ReasonCode` copies its class's table of
reason names. Nothing changes those tables after they are made. In a gateway at 759 alarms/s
this was 7 % of the process's time (py-spy). `share()` makes every instance use one set of
tables instead. And `Properties.unpack` first clears the instance, which the library does by
trying all 27 names, each with a string replace and a `hasattr`: 9 % of a gateway taking 16,000
heartbeats/s (py-spy), for an instance just made and holding none. The shared `clear` deletes
the property attributes the instance holds. The library's behaviour is otherwise unchanged
(tests/unit/test_paho_tables.py compares the shared tables and `clear` with the library's own,
and decodes packets both ways).
"""

from __future__ import annotations

from typing import Any

import paho.mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

_SHARED = "_pingan_shared_tables"
_ORIGINAL_PROPERTIES_INIT = Properties.__init__
_ORIGINAL_REASONCODE_INIT = ReasonCode.__init__
_ORIGINAL_PROPERTIES_CLEAR = Properties.clear
# The attributes Properties.__setattr__ keeps as they are; every other attribute is a property.
_PRIVATE = frozenset(("packetType", "types", "names", "properties"))


def share() -> None:
    """Make paho's per-packet objects share their constant tables (idempotent). Only for the
    paho 2 releases whose constructors this was checked against (the ReasonCode one is the
    library's own, less the copy)."""
    if getattr(Properties, _SHARED, False) or not paho.mqtt.__version__.startswith(("2.1", "2.2")):
        return
    model = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # the tables, built once by the library
    types, names, properties = model.types, model.names, model.properties

    def properties_init(self: Properties, packetType: int) -> None:
        # Properties.__setattr__ stores these four names as they are (see its privateVars).
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "properties", properties)

    def properties_clear(self: Properties) -> None:
        held = self.__dict__
        for name in [n for n in held if n not in _PRIVATE]:
            del held[name]

    reason_names = ReasonCode.names

    def reasoncode_init(self: ReasonCode, packetType: int, aName: str = "Success", identifier: int = -1) -> None:
        self.names = reason_names
        self.packetType = packetType
        if identifier == -1:
            if packetType == PacketTypes.DISCONNECT and aName == "Success":
                aName = "Normal disconnection"
            self.set(aName)
        else:
            self.value = identifier
            self.getName()  # check it's good

    Properties.__init__ = properties_init  # type: ignore[method-assign]
    Properties.clear = properties_clear  # type: ignore[method-assign]
    ReasonCode.__init__ = reasoncode_init  # type: ignore[method-assign]
    setattr(Properties, _SHARED, True)


def unshare() -> None:
    """Back to the library's own constructors (for the test that compares both)."""
    Properties.__init__ = _ORIGINAL_PROPERTIES_INIT  # type: ignore[method-assign]
    Properties.clear = _ORIGINAL_PROPERTIES_CLEAR  # type: ignore[method-assign]
    ReasonCode.__init__ = _ORIGINAL_REASONCODE_INIT  # type: ignore[method-assign]
    if getattr(Properties, _SHARED, False):
        delattr(Properties, _SHARED)


def tables_of(obj: Any) -> tuple[Any, ...]:
    """The lookup tables an instance uses (for the test)."""
    if isinstance(obj, Properties):
        return (obj.types, obj.names, obj.properties)
    return (obj.names,)

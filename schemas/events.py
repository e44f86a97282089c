"""Device events: the payload a device publishes on `pingan/v1/devices/{device_id}/events`.

These typed definitions are the source of the contract. The JSON Schema under
`schemas/jsonschema/` is generated from them (`python -m schemas.generate`) and a test fails
when the committed file and these classes drift apart.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Any, ClassVar, Final

import msgspec

MAX_PAYLOAD_BYTES: Final = 4096
"""An event payload larger than this is rejected before it is parsed."""

Identifier = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        description="1-64 characters: letters, digits and . _ : - (starting with a letter or digit)",
    ),
]
DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DeviceId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=DEVICE_ID_PATTERN,
        description="1-64 characters: letters, digits and . _ - (starting with a letter or "
        "digit); also the device's MQTT user name",
    ),
]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True, description="RFC 3339 date-time with a UTC offset")]
Sequence = Annotated[
    int,
    msgspec.Meta(ge=0, le=2**63 - 1, description="the device's own counter, rising by one per event"),
]
Battery = Annotated[int, msgspec.Meta(ge=0, le=100, description="battery charge in percent")]


class Category(enum.StrEnum):
    """What an event means to the platform."""

    ALARM = "alarm"  # opens or joins an incident and pages people
    CANCEL = "cancel"  # the resident withdraws an alarm within the grace period
    MAINTENANCE = "maintenance"  # opens maintenance work, never a panic-level alarm
    HEALTH = "health"  # updates device health only


class _Event(msgspec.Struct, tag_field="type", kw_only=True, frozen=True):
    event_id: Identifier
    device_id: DeviceId
    occurred_at: Timestamp
    seq: Sequence
    battery: Battery | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)

    category: ClassVar[Category]
    priority: ClassVar[int]
    """1 is the most urgent; sets the deadlines of the incident this event opens."""

    @property
    def type(self) -> str:
        return _TYPE_OF[type(self)]


class PanicAlarm(_Event, tag="alarm.panic", frozen=True):
    """A person pressed a one-tap panic button, pendant or alarm column."""

    category = Category.ALARM
    priority = 1


class FireAlarm(_Event, tag="alarm.fire", frozen=True):
    """A smoke or heat detector went off."""

    category = Category.ALARM
    priority = 1


class GasAlarm(_Event, tag="alarm.gas", frozen=True):
    """A gas detector went off."""

    category = Category.ALARM
    priority = 1


class FallAlarm(_Event, tag="alarm.fall", frozen=True):
    """A fall detector or radar reported a fall."""

    category = Category.ALARM
    priority = 1


class MedicalAlarm(_Event, tag="alarm.medical", frozen=True):
    """A medical emergency reported by a device (for example a health pendant)."""

    category = Category.ALARM
    priority = 1


class IntrusionAlarm(_Event, tag="alarm.intrusion", frozen=True):
    """A door, window or motion sensor of an armed home."""

    category = Category.ALARM
    priority = 2


class CancelAlarm(_Event, tag="alarm.cancel", frozen=True):
    """The resident cancels a false press within the grace period.

    `data.cancels` may name the event id of the press being cancelled; without it the
    open incident of the device is meant."""

    category = Category.CANCEL
    priority = 1


class TamperEvent(_Event, tag="device.tamper", frozen=True):
    """The device was opened or removed from its mount."""

    category = Category.MAINTENANCE
    priority = 3


class FaultEvent(_Event, tag="device.fault", frozen=True):
    """The device reports a fault of its own."""

    category = Category.MAINTENANCE
    priority = 4


class LowBatteryEvent(_Event, tag="device.low_battery", frozen=True):
    """The battery is low; `battery` carries the charge."""

    category = Category.MAINTENANCE
    priority = 4


class HeartbeatEvent(_Event, tag="device.heartbeat", frozen=True):
    """The device is alive."""

    category = Category.HEALTH
    priority = 5


DeviceEvent = (
    PanicAlarm
    | FireAlarm
    | GasAlarm
    | FallAlarm
    | MedicalAlarm
    | IntrusionAlarm
    | CancelAlarm
    | TamperEvent
    | FaultEvent
    | LowBatteryEvent
    | HeartbeatEvent
)

EVENT_CLASSES: Final[dict[str, type[_Event]]] = {
    cls.__struct_config__.tag: cls  # type: ignore[misc]
    for cls in (
        PanicAlarm,
        FireAlarm,
        GasAlarm,
        FallAlarm,
        MedicalAlarm,
        IntrusionAlarm,
        CancelAlarm,
        TamperEvent,
        FaultEvent,
        LowBatteryEvent,
        HeartbeatEvent,
    )
}
EVENT_TYPES: Final = tuple(EVENT_CLASSES)
# The tag of each class, read once (`__struct_config__` builds a new object at each read, and
# `type` is read several times per event on the hot path).
_TYPE_OF: Final[dict[type[_Event], str]] = {cls: tag for tag, cls in EVENT_CLASSES.items()}


def event_class(event_type: str) -> type[_Event] | None:
    return EVENT_CLASSES.get(event_type)


AnyEvent = _Event
"""The common base of every device event (for type annotations)."""

"""Topic names: the MQTT topics of devices and officer apps, and the Kafka topics."""

from __future__ import annotations

from dataclasses import dataclass

MQTT_ROOT = "pingan/v1"

DEVICE_EVENTS = MQTT_ROOT + "/devices/{device_id}/events"
DEVICE_STATUS = MQTT_ROOT + "/devices/{device_id}/status"
DEVICE_RECEIPTS = MQTT_ROOT + "/devices/{device_id}/receipts"
OFFICER_NOTIFICATIONS = MQTT_ROOT + "/officers/{officer_id}/notifications"

# The gateways share one subscription; the broker hands each message to one of them.
DEVICE_EVENTS_FILTER = MQTT_ROOT + "/devices/+/events"
SHARED_GROUP = "pingan-gateways"


def shared(topic_filter: str, group: str = SHARED_GROUP) -> str:
    """`$share/<group>/<filter>`, or the plain filter when the group is empty."""
    return f"$share/{group}/{topic_filter}" if group else topic_filter


def device_events(device_id: str) -> str:
    return DEVICE_EVENTS.format(device_id=device_id)


def device_status(device_id: str) -> str:
    return DEVICE_STATUS.format(device_id=device_id)


def device_receipts(device_id: str) -> str:
    return DEVICE_RECEIPTS.format(device_id=device_id)


def officer_notifications(officer_id: str) -> str:
    return OFFICER_NOTIFICATIONS.format(officer_id=officer_id)


_EVENTS_PREFIX = MQTT_ROOT + "/devices/"
_EVENTS_SUFFIX = "/events"


def device_id_from_events_topic(topic: str) -> str | None:
    """The device id of `pingan/v1/devices/{device_id}/events`, or None for any other topic."""
    if not (topic.startswith(_EVENTS_PREFIX) and topic.endswith(_EVENTS_SUFFIX)):
        return None
    device_id = topic[len(_EVENTS_PREFIX) : -len(_EVENTS_SUFFIX)]
    if not device_id or "/" in device_id or "+" in device_id or "#" in device_id:
        return None
    return device_id


@dataclass(frozen=True, slots=True)
class KafkaTopics:
    """Kafka topic names under a configurable prefix (default `pingan`)."""

    prefix: str = "pingan"

    @property
    def alarm_events(self) -> str:
        """Accepted device events, key: device_id."""
        return f"{self.prefix}.alarm-events"

    @property
    def alarm_events_dlq(self) -> str:
        """Rejected input with its reason, key: device_id where known."""
        return f"{self.prefix}.alarm-events.dlq"

    @property
    def incident_updates(self) -> str:
        """Every change of an incident, key: incident_id."""
        return f"{self.prefix}.incident-updates"

    def all(self) -> tuple[str, ...]:
        return (self.alarm_events, self.alarm_events_dlq, self.incident_updates)

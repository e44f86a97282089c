"""Messages the platform itself produces: Kafka records, device receipts, officer notifications."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Final

import msgspec

from schemas.events import DeviceEvent


class Ingress(enum.StrEnum):
    MQTT = "mqtt"
    HTTP = "http"


class AcceptedEvent(msgspec.Struct, kw_only=True, frozen=True):
    """A validated device event on Kafka `pingan.alarm-events` (key: device_id)."""

    event: DeviceEvent
    received_at: datetime
    ingress: Ingress
    gateway_id: str
    clock_offset_s: float | None = None
    """Set when the device's occurred_at lies outside the accepted window (seconds ahead of
    received_at; negative: behind). The event is recorded with received_at in its place."""


class RejectReason(enum.StrEnum):
    """Why an input was refused. Stable codes: devices and integrators may match on them."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"  # not JSON, or not UTF-8
    INVALID = "invalid"  # JSON, but not a valid event (a field missing, wrong or out of range)
    UNKNOWN_TYPE = "unknown_type"
    BAD_TOPIC = "bad_topic"
    DEVICE_MISMATCH = "device_mismatch"  # device id of topic and payload disagree
    UNKNOWN_DEVICE = "unknown_device"
    INACTIVE_DEVICE = "inactive_device"
    CLOCK_SKEW = "clock_skew"  # no longer given: a skewed event is accepted and flagged (clock_offset_s)
    RATE_LIMITED = "rate_limited"  # the device sent more than its rate (see the README for alarms)
    UNPROCESSABLE = "unprocessable"  # the worker could not record an accepted event, or the gateway could not check one


class RejectedInput(msgspec.Struct, kw_only=True, frozen=True):
    """A refused input on Kafka `pingan.alarm-events.dlq` (key: device_id where known)."""

    reason: RejectReason
    detail: str
    received_at: datetime
    ingress: Ingress
    gateway_id: str
    topic: str | None = None
    device_id: str | None = None
    event_id: str | None = None
    payload: str = ""
    """The raw input, decoded as UTF-8 with replacement characters, at most 8 KiB."""
    payload_bytes: int = 0


class ReceiptStatus(enum.StrEnum):
    ACCEPTED = "accepted"  # the platform holds the event durably
    REJECTED = "rejected"  # refused, see reason
    INCIDENT_OPENED = "incident_opened"
    INCIDENT_JOINED = "incident_joined"  # a repeated press joined the open incident
    ACKNOWLEDGED = "acknowledged"  # an officer acknowledged
    ON_SCENE = "on_scene"
    RESOLVED = "resolved"
    CANCELLED = "cancelled"  # the resident's cancel within the grace period closed it
    CANCEL_REFUSED = "cancel_refused"  # too late to cancel (or an officer is on scene); the alarm stands


class Receipt(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Published to the device on `pingan/v1/devices/{device_id}/receipts` (QoS 1)."""

    status: ReceiptStatus
    device_id: str
    at: datetime
    event_id: str | None = None
    incident_id: str | None = None
    case_number: str | None = None
    reason: RejectReason | None = None
    detail: str | None = None
    """Why an input was rejected; on an `accepted` receipt, a warning (a wrong device clock)."""


class OfficerNotification(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Published to an officer app on `pingan/v1/officers/{officer_id}/notifications` (QoS 1)."""

    notification_id: int
    officer_id: str
    incident_id: str
    case_number: str
    event_id: str  # the event that opened the incident
    kind: str
    """incident_opened, major_incident, reminder, escalated (pages: act now); moved_on,
    acknowledged, on_scene, taken_over, assigned, closed, cancelled, cancel_refused (inform)"""
    reason: str  # why this officer is told, in words
    priority: int
    event_type: str
    grid_code: str
    pressed_at: datetime
    created_at: datetime
    level: str  # grid, community, street, district, city: whose level is paged (always present)
    device_id: str | None = None  # none for a major incident (several devices)
    device_kind: str | None = None
    address: str | None = None
    resident_note: str | None = None
    status: str | None = None  # the incident's status when this was sent


class IncidentUpdate(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Published on Kafka `pingan.incident-updates` (key: incident_id) for every change."""

    incident_id: str
    case_number: str
    change: str  # opened, joined, ...
    status: str
    priority: int
    level: str
    device_id: str
    grid_code: str
    at: datetime
    event_id: str | None = None
    event_type: str | None = None
    version: int = 0


MESSAGE_TYPES: Final = (AcceptedEvent, RejectedInput, Receipt, OfficerNotification, IncidentUpdate)

"""The AsyncAPI 3 document of the MQTT and Kafka contract, generated from the typed
definitions (`python -m schemas.generate` writes it beside the JSON Schema files)."""

from __future__ import annotations

from typing import Any

import msgspec

from schemas.actions import ActionResult, OfficerAppAction
from schemas.events import MAX_PAYLOAD_BYTES, DeviceEvent
from schemas.messages import AcceptedEvent, IncidentUpdate, OfficerNotification, Receipt, RejectedInput


def _schema(t: Any) -> dict[str, Any]:
    return msgspec.json.schema(t)


def _mqtt(qos: int = 1, retain: bool = False) -> dict[str, Any]:
    return {"mqtt": {"qos": qos, "retain": retain, "bindingVersion": "0.2.0"}}


def document() -> dict[str, Any]:
    device_param = {"deviceId": {"description": "the device id, also its MQTT user name"}}
    officer_param = {"officerId": {"description": "the officer id, also the officer app's MQTT user name"}}
    messages = {
        "DeviceEvent": {
            "name": "DeviceEvent",
            "contentType": "application/json",
            "summary": f"an alarm, health or maintenance event, at most {MAX_PAYLOAD_BYTES} bytes",
            "payload": _schema(DeviceEvent),
        },
        "DeviceStatus": {
            "name": "DeviceStatus",
            "contentType": "text/plain",
            "summary": "retained `online` / `offline` (the last will)",
            "payload": {"type": "string", "enum": ["online", "offline"]},
        },
        "Receipt": {"name": "Receipt", "contentType": "application/json", "payload": _schema(Receipt)},
        "OfficerNotification": {
            "name": "OfficerNotification",
            "contentType": "application/json",
            "payload": _schema(OfficerNotification),
        },
        "OfficerAction": {
            "name": "OfficerAction",
            "contentType": "application/json",
            "payload": _schema(OfficerAppAction),
        },
        "ActionResult": {"name": "ActionResult", "contentType": "application/json", "payload": _schema(ActionResult)},
        "AcceptedEvent": {
            "name": "AcceptedEvent",
            "contentType": "application/json",
            "payload": _schema(AcceptedEvent),
        },
        "RejectedInput": {
            "name": "RejectedInput",
            "contentType": "application/json",
            "payload": _schema(RejectedInput),
        },
        "IncidentUpdate": {
            "name": "IncidentUpdate",
            "contentType": "application/json",
            "payload": _schema(IncidentUpdate),
        },
    }

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/messages/{name}"}

    channels = {
        "deviceEvents": {
            "address": "pingan/v1/devices/{deviceId}/events",
            "parameters": device_param,
            "messages": {"DeviceEvent": ref("DeviceEvent")},
            "bindings": _mqtt(),
        },
        "deviceStatus": {
            "address": "pingan/v1/devices/{deviceId}/status",
            "parameters": device_param,
            "messages": {"DeviceStatus": ref("DeviceStatus")},
            "bindings": _mqtt(retain=True),
        },
        "deviceReceipts": {
            "address": "pingan/v1/devices/{deviceId}/receipts",
            "parameters": device_param,
            "messages": {"Receipt": ref("Receipt")},
            "bindings": _mqtt(),
        },
        "officerNotifications": {
            "address": "pingan/v1/officers/{officerId}/notifications",
            "parameters": officer_param,
            "messages": {"OfficerNotification": ref("OfficerNotification")},
            "bindings": _mqtt(),
        },
        "officerActions": {
            "address": "pingan/v1/officers/{officerId}/actions",
            "parameters": officer_param,
            "messages": {"OfficerAction": ref("OfficerAction")},
            "bindings": _mqtt(),
        },
        "officerResults": {
            "address": "pingan/v1/officers/{officerId}/results",
            "parameters": officer_param,
            "messages": {"ActionResult": ref("ActionResult")},
            "bindings": _mqtt(),
        },
        "alarmEvents": {
            "address": "pingan.alarm-events",
            "messages": {"AcceptedEvent": ref("AcceptedEvent")},
            "bindings": {"kafka": {"partitions": 6, "replicas": 3, "bindingVersion": "0.5.0"}},
        },
        "alarmEventsDlq": {
            "address": "pingan.alarm-events.dlq",
            "messages": {"RejectedInput": ref("RejectedInput")},
            "bindings": {"kafka": {"bindingVersion": "0.5.0"}},
        },
        "incidentUpdates": {
            "address": "pingan.incident-updates",
            "messages": {"IncidentUpdate": ref("IncidentUpdate")},
            "bindings": {"kafka": {"bindingVersion": "0.5.0"}},
        },
    }

    def op(action: str, channel: str, summary: str, key: str | None = None) -> dict[str, Any]:
        o: dict[str, Any] = {"action": action, "channel": {"$ref": f"#/channels/{channel}"}, "summary": summary}
        if key:
            o["bindings"] = {"kafka": {"key": {"type": "string", "description": key}, "bindingVersion": "0.5.0"}}
        return o

    operations = {
        "receiveDeviceEvent": op(
            "receive", "deviceEvents", "devices publish events (QoS 1); PUBACK once Kafka holds it"
        ),
        "receiveDeviceStatus": op("receive", "deviceStatus", "devices publish their status"),
        "sendReceipt": op(
            "send",
            "deviceReceipts",
            "accepted (not for heartbeats: their PUBACK is the acknowledgement), "
            "rejected (with reason), incident opened, ...",
        ),
        "sendOfficerNotification": op("send", "officerNotifications", "pages and information for officer apps"),
        "receiveOfficerAction": op("receive", "officerActions", "officer apps act on incidents"),
        "sendActionResult": op("send", "officerResults", "the answer to an officer app's action"),
        "sendAcceptedEvent": op("send", "alarmEvents", "gateways forward accepted events", key="device_id"),
        "sendRejectedInput": op("send", "alarmEventsDlq", "refused input with its reason", key="device_id where known"),
        "sendIncidentUpdate": op("send", "incidentUpdates", "every change of an incident", key="incident_id"),
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Ping'an Dispatch events",
            "version": "1.0.0",
            "description": "MQTT topics of devices and officer apps (QoS 1, MQTT 5), and the Kafka topics "
            "(prefix configurable, default `pingan`).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "mqtt": {
                "host": "127.0.0.1:18830",
                "protocol": "mqtt",
                "protocolVersion": "5",
                "description": "devices and officer apps: user name and password per device / officer",
            },
            "kafka": {"host": "127.0.0.1:19092", "protocol": "kafka", "description": "internal"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }

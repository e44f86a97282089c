"""Writes the JSON Schema documents of the contract: `python -m schemas.generate [--check]`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec
import orjson

from schemas.events import MAX_PAYLOAD_BYTES, DeviceEvent
from schemas.messages import IncidentUpdate, OfficerNotification, Receipt, RejectedInput

OUT_DIR = Path(__file__).parent / "jsonschema"
ASYNCAPI_PATH = Path(__file__).parent / "asyncapi.json"
BASE_ID = "https://pingan-dispatch.org/schemas/v1/"

DOCUMENTS: dict[str, tuple[Any, str]] = {
    "device-event": (
        DeviceEvent,
        f"An event a device publishes on pingan/v1/devices/{{device_id}}/events (QoS 1). "
        f"At most {MAX_PAYLOAD_BYTES} bytes of UTF-8 JSON; the device_id must equal the one in "
        "the topic.",
    ),
    "device-receipt": (Receipt, "A receipt on pingan/v1/devices/{device_id}/receipts."),
    "officer-notification": (
        OfficerNotification,
        "A notification on pingan/v1/officers/{officer_id}/notifications.",
    ),
    "incident-update": (IncidentUpdate, "A record on Kafka pingan.incident-updates."),
    "rejected-input": (RejectedInput, "A record on Kafka pingan.alarm-events.dlq."),
}


def render(name: str) -> bytes:
    type_, description = DOCUMENTS[name]
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{BASE_ID}{name}.schema.json",
        "title": name,
        "description": description,
    }
    schema.update(msgspec.json.schema(type_))
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def render_asyncapi() -> bytes:
    from schemas.asyncapi import document

    return orjson.dumps(document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    OUT_DIR.mkdir(exist_ok=True)
    stale = []
    for name in DOCUMENTS:
        path = OUT_DIR / f"{name}.schema.json"
        content = render(name)
        if check:
            if not path.exists() or path.read_bytes() != content:
                stale.append(path.name)
        else:
            path.write_bytes(content)
            print(f"wrote {path}")
    content = render_asyncapi()
    if check:
        if not ASYNCAPI_PATH.exists() or ASYNCAPI_PATH.read_bytes() != content:
            stale.append(ASYNCAPI_PATH.name)
    else:
        ASYNCAPI_PATH.write_bytes(content)
        print(f"wrote {ASYNCAPI_PATH}")
    if stale:
        print("out of date: " + ", ".join(stale) + " (run: python -m schemas.generate)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

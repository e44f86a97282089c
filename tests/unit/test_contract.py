"""The committed JSON Schema documents are generated from the typed definitions."""

from __future__ import annotations

import json

import msgspec

from schemas import generate
from schemas.events import EVENT_CLASSES, EVENT_TYPES, Category


def test_committed_json_schema_matches_the_typed_definitions() -> None:
    for name in generate.DOCUMENTS:
        path = generate.OUT_DIR / f"{name}.schema.json"
        assert path.exists(), f"{path.name} missing: run `make schemas`"
        assert path.read_bytes() == generate.render(name), (
            f"{path.name} is out of date with schemas/: run `make schemas` and commit"
        )
    assert generate.ASYNCAPI_PATH.read_bytes() == generate.render_asyncapi(), "asyncapi.json is out of date"


def test_check_mode_reports_drift(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(generate, "OUT_DIR", tmp_path)
    monkeypatch.setattr(generate, "ASYNCAPI_PATH", tmp_path / "asyncapi.json")
    assert generate.main(["--check"]) == 1  # nothing written yet: everything is stale
    assert generate.main([]) == 0
    assert generate.main(["--check"]) == 0
    doc = tmp_path / "device-event.schema.json"
    doc.write_text(doc.read_text().replace('"maxLength": 64', '"maxLength": 65', 1))
    assert generate.main(["--check"]) == 1


def test_asyncapi_document_names_every_topic() -> None:
    doc = json.loads(generate.ASYNCAPI_PATH.read_text())
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert "pingan/v1/devices/{deviceId}/events" in addresses
    assert {"pingan.alarm-events", "pingan.alarm-events.dlq", "pingan.incident-updates"} <= addresses
    for op in doc["operations"].values():
        assert op["channel"]["$ref"].removeprefix("#/channels/") in doc["channels"]


def test_every_event_type_of_the_contract_has_a_definition() -> None:
    expected = {
        "alarm.panic",
        "alarm.cancel",
        "alarm.fire",
        "alarm.gas",
        "alarm.fall",
        "alarm.intrusion",
        "alarm.medical",
        "device.tamper",
        "device.fault",
        "device.low_battery",
        "device.heartbeat",
    }
    assert set(EVENT_TYPES) == expected
    schema = json.loads((generate.OUT_DIR / "device-event.schema.json").read_text())
    tags = {d["properties"]["type"]["enum"][0] for d in schema["$defs"].values() if "type" in d["properties"]}
    assert tags == expected


def test_priorities_put_life_safety_first_and_faults_never_page_like_alarms() -> None:
    p = {t: cls.priority for t, cls in EVENT_CLASSES.items()}
    for urgent in ("alarm.fire", "alarm.gas", "alarm.fall", "alarm.panic", "alarm.medical"):
        assert p[urgent] < p["alarm.intrusion"] < p["device.tamper"] <= p["device.fault"]
    for t in ("device.tamper", "device.fault", "device.low_battery"):
        assert EVENT_CLASSES[t].category is Category.MAINTENANCE
    assert EVENT_CLASSES["device.heartbeat"].category is Category.HEALTH


def test_round_trip_keeps_the_type_tag() -> None:
    raw = (
        b'{"type":"alarm.gas","event_id":"e-1","device_id":"d-1",'
        b'"occurred_at":"2026-11-26T10:00:00+08:00","seq":3,"battery":88}'
    )
    ev = msgspec.json.decode(raw, type=generate.DOCUMENTS["device-event"][0])
    assert ev.type == "alarm.gas" and ev.seq == 3 and ev.battery == 88
    again = msgspec.json.decode(msgspec.json.encode(ev), type=generate.DOCUMENTS["device-event"][0])
    assert again == ev

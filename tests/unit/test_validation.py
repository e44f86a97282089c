"""Validation of device input: every input gets an event or a rejection with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateways.validation import (
    ClockLimits,
    DeviceCache,
    DeviceInfo,
    Rejection,
    Validator,
    clock_offset,
    parse_event,
)
from schemas.events import EVENT_TYPES, MAX_PAYLOAD_BYTES
from schemas.messages import RejectReason
from schemas.topics import device_id_from_events_topic

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

ident = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,40}", fullmatch=True)
device_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}", fullmatch=True)


def good(device_id: str = "dev-1", **over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": "e-1",
        "device_id": device_id,
        "type": "alarm.panic",
        "occurred_at": NOW.isoformat(),
        "seq": 1,
    }
    body.update(over)
    return body


def parse(body: object, topic_device: str | None = "dev-1") -> object:
    return parse_event(orjson.dumps(body), topic_device_id=topic_device)


@given(
    device_id=device_ids,
    event_id=ident,
    type_=st.sampled_from(EVENT_TYPES),
    seq=st.integers(0, 2**63 - 1),
    battery=st.none() | st.integers(0, 100),
    skew=st.integers(-10 * 365 * 86400, 10 * 365 * 86400),
)
def test_every_well_formed_event_is_accepted(device_id, event_id, type_, seq, battery, skew) -> None:
    body = good(
        device_id,
        event_id=event_id,
        type=type_,
        seq=seq,
        battery=battery,
        occurred_at=(NOW + timedelta(seconds=skew)).isoformat(),
    )
    ev = parse(body, device_id)
    assert not isinstance(ev, Rejection), ev  # a wrong device clock never refuses an event
    assert ev.type == type_ and ev.device_id == device_id and ev.seq == seq
    offset = clock_offset(ev, NOW)
    if -86400 <= skew <= 300:
        assert offset is None
    else:
        assert offset == skew  # flagged with how far off the device's clock is


def test_clock_offset_extremes_are_flagged_not_crashed() -> None:
    for ts, sign in (("0001-01-01T00:00:00+14:00", -1), ("9999-12-31T23:59:59-14:00", 1), ("1970-01-01T00:00:00Z", -1)):
        ev = parse(good(occurred_at=ts))
        assert not isinstance(ev, Rejection)
        offset = clock_offset(ev, NOW)
        assert offset is not None and offset * sign > 0


@settings(max_examples=500)
@given(st.binary(max_size=MAX_PAYLOAD_BYTES + 200))
def test_any_bytes_give_an_event_or_a_reasoned_rejection(payload: bytes) -> None:
    result = parse_event(payload, topic_device_id="dev-1")
    if isinstance(result, Rejection):
        assert isinstance(result.reason, RejectReason) and result.detail
    else:
        assert result.device_id == "dev-1"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500)
@given(
    st.dictionaries(
        st.sampled_from(["event_id", "device_id", "type", "occurred_at", "seq", "battery", "data", "x"]),
        json_values,
    )
)
def test_any_json_object_gives_an_event_or_a_reasoned_rejection(obj) -> None:
    result = parse(obj)
    if isinstance(result, Rejection):
        assert result.reason in (
            RejectReason.INVALID,
            RejectReason.UNKNOWN_TYPE,
            RejectReason.DEVICE_MISMATCH,
            RejectReason.TOO_LARGE,
        )
        assert result.detail


@pytest.mark.parametrize(
    ("payload", "topic_device", "reason"),
    [
        (b"{", "dev-1", RejectReason.MALFORMED),
        (b"\xff\xfe\x00", "dev-1", RejectReason.MALFORMED),
        (b"[]", "dev-1", RejectReason.INVALID),
        (orjson.dumps(good(type="alarm.meteor")), "dev-1", RejectReason.UNKNOWN_TYPE),
        (orjson.dumps(good(seq=-1)), "dev-1", RejectReason.INVALID),
        (orjson.dumps(good(battery=101)), "dev-1", RejectReason.INVALID),
        (orjson.dumps(good(event_id="")), "dev-1", RejectReason.INVALID),
        (orjson.dumps(good(event_id="a/b")), "dev-1", RejectReason.INVALID),
        (orjson.dumps(good("dev:1")), "dev:1", RejectReason.INVALID),
        (orjson.dumps(good(occurred_at="2026-11-26T12:00:00")), "dev-1", RejectReason.INVALID),
        (orjson.dumps(good(occurred_at="yesterday")), "dev-1", RejectReason.INVALID),
        (orjson.dumps(good()), "dev-2", RejectReason.DEVICE_MISMATCH),
        (orjson.dumps(good()), None, RejectReason.BAD_TOPIC),
        (
            b'{"event_id":"e-1","device_id":"dev-1","type":"alarm.panic","occurred_at":"2026-11-26T12:00:00Z",'
            b'"seq":1,"data":{"a":"\xff"}}',
            "dev-1",
            RejectReason.MALFORMED,
        ),
        (orjson.dumps(good(data={"note": "a\x00b"})), "dev-1", RejectReason.INVALID),
        (orjson.dumps(good(data={"a\x00": 1})), "dev-1", RejectReason.INVALID),
        (msgspec.json.encode(good(data={"n": 2**64})), "dev-1", RejectReason.INVALID),
        (
            b'{"event_id":"e-1","device_id":"dev-1","type":"alarm.panic","occurred_at":"2026-11-26T12:00:00Z",'
            b'"seq":1,"data":{"n":123456789012345678901234567890}}',
            "dev-1",
            RejectReason.INVALID,
        ),
        (
            b'{"event_id":"e-1","device_id":"dev-1","type":"alarm.panic","occurred_at":"2026-11-26T12:00:00Z",'
            b'"seq":1,"data":{"d":' + b"[" * 40 + b"]" * 40 + b"}}",
            "dev-1",
            RejectReason.INVALID,
        ),
        (orjson.dumps(good(data={"pad": "x" * MAX_PAYLOAD_BYTES})), "dev-1", RejectReason.TOO_LARGE),
    ],
)
def test_rejections_carry_their_reason(payload: bytes, topic_device: str | None, reason) -> None:
    result = parse_event(payload, topic_device_id=topic_device)
    assert isinstance(result, Rejection)
    assert result.reason is reason
    assert result.detail


def test_deeply_nested_json_is_rejected_not_crashed() -> None:
    payload = b'{"data":' + b"[" * 2000 + b"]" * 2000 + b"}"
    result = parse_event(payload[:MAX_PAYLOAD_BYTES], topic_device_id="dev-1")
    assert isinstance(result, Rejection)


def test_unknown_type_keeps_the_event_id_for_the_receipt() -> None:
    result = parse(good(type="alarm.meteor", event_id="e-77"))
    assert isinstance(result, Rejection) and result.event_id == "e-77"


def test_exactly_the_limit_is_allowed() -> None:
    body = good()
    base = len(orjson.dumps({**body, "data": {"p": ""}}))
    body["data"] = {"p": "x" * (MAX_PAYLOAD_BYTES - base)}
    raw = orjson.dumps(body)
    assert len(raw) == MAX_PAYLOAD_BYTES
    assert not isinstance(parse_event(raw, topic_device_id="dev-1"), Rejection)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("pingan/v1/devices/dev-1/events", "dev-1"),
        ("pingan/v1/devices//events", None),
        ("pingan/v1/devices/a/b/events", None),
        ("pingan/v1/devices/dev-1/status", None),
        ("pingan/v2/devices/dev-1/events", None),
        ("pingan/v1/devices/+/events", None),
    ],
)
def test_device_id_from_topic(topic: str, expected: str | None) -> None:
    assert device_id_from_events_topic(topic) == expected


async def test_registry_checks_known_and_active_and_caches() -> None:
    calls: list[str] = []
    registry = {
        "dev-1": DeviceInfo("dev-1", "990102001001001", True),
        "dev-off": DeviceInfo("dev-off", "990102001001001", False),
    }

    class Lookup:
        async def __call__(self, device_id: str) -> DeviceInfo | None:
            calls.append(device_id)
            return registry.get(device_id)

        async def many(self, device_ids: list[str]) -> dict[str, DeviceInfo]:
            calls.append(",".join(device_ids))
            return {d: registry[d] for d in device_ids if d in registry}

    lookup = Lookup()
    v = Validator(DeviceCache(lookup, ttl_s=30))
    ok = await v.validate(orjson.dumps(good()), topic_device_id="dev-1", now_monotonic=0)
    assert not isinstance(ok, Rejection)
    off = await v.validate(orjson.dumps(good("dev-off")), topic_device_id="dev-off", now_monotonic=0)
    assert isinstance(off, Rejection) and off.reason is RejectReason.INACTIVE_DEVICE
    ghost = await v.validate(orjson.dumps(good("ghost")), topic_device_id="ghost", now_monotonic=0)
    assert isinstance(ghost, Rejection) and ghost.reason is RejectReason.UNKNOWN_DEVICE
    await v.validate(orjson.dumps(good()), topic_device_id="dev-1", now_monotonic=10)
    assert calls == ["dev-1", "dev-off", "ghost"]  # the second dev-1 came from the cache
    await v.validate(orjson.dumps(good()), topic_device_id="dev-1", now_monotonic=31)
    assert calls[-1] == "dev-1"  # expired entries are looked up again


async def test_prefetch_looks_up_a_batch_once_and_remembers_unknown_devices() -> None:
    calls: list[list[str]] = []

    class Lookup:
        async def __call__(self, device_id: str) -> DeviceInfo | None:
            raise AssertionError("prefetched devices must not be looked up one by one")

        async def many(self, device_ids: list[str]) -> dict[str, DeviceInfo]:
            calls.append(device_ids)
            return {"dev-1": DeviceInfo("dev-1", "990102001001001", True)}

    cache = DeviceCache(Lookup(), ttl_s=30)
    await cache.prefetch(["dev-1", "ghost", "dev-1"], now_monotonic=0)
    assert calls == [["dev-1", "ghost"]]
    assert (await cache.get("dev-1", 1)) == DeviceInfo("dev-1", "990102001001001", True)
    assert await cache.get("ghost", 1) is None
    await cache.prefetch(["dev-1", "ghost"], now_monotonic=5)  # both fresh: no query
    assert len(calls) == 1
    await cache.prefetch(["dev-1"], now_monotonic=31)  # stale: asked again
    assert calls[-1] == ["dev-1"]


_REGISTRY = {
    "dev-1": DeviceInfo("dev-1", "990102001001001", True),
    "dev-off": DeviceInfo("dev-off", "990102001001001", False),
}


class _CountingLookup:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, device_id: str) -> DeviceInfo | None:
        self.calls += 1
        return _REGISTRY.get(device_id)

    async def many(self, device_ids: list[str]) -> dict[str, DeviceInfo]:
        self.calls += 1
        return {d: _REGISTRY[d] for d in device_ids if d in _REGISTRY}


@settings(max_examples=300)
@given(
    device=st.sampled_from(["dev-1", "dev-off", "ghost"]),
    topic_device=st.sampled_from(["dev-1", "dev-off", "ghost", None]),
    body=st.dictionaries(
        st.sampled_from(["event_id", "device_id", "type", "occurred_at", "seq", "battery", "data"]),
        st.none() | st.integers(-5, 200) | st.sampled_from([*EVENT_TYPES, "e-1", NOW.isoformat(), "x"]),
        max_size=7,
    ),
    well_formed=st.booleans(),
)
async def test_validating_from_the_cache_gives_what_validating_gives(device, topic_device, body, well_formed) -> None:
    """The gateway's path without waiting (a device in the cache) decides every input as the
    waiting path does; it declines (None) only when the registry would have to be asked."""
    payload = orjson.dumps({**good(device), **body} if well_formed else body)
    lookup = _CountingLookup()
    v = Validator(DeviceCache(lookup, ttl_s=30))
    first = v.validate_cached(payload, topic_device_id=topic_device, now_monotonic=0)
    expected = await v.validate(payload, topic_device_id=topic_device, now_monotonic=0)
    asked = lookup.calls
    if first is None:
        assert asked == 1  # declined: the device was not in the cache, and validate asked
    else:
        assert first == expected  # decided without the registry: a rejection before any lookup
    again = v.validate_cached(payload, topic_device_id=topic_device, now_monotonic=1)
    assert again == expected  # now in the cache (known or not): decided, as validate decides
    assert lookup.calls == asked
    assert v.validate_cached(payload, topic_device_id=topic_device, now_monotonic=31) in (None, expected)


async def test_validating_from_the_cache_declines_a_stale_entry() -> None:
    v = Validator(DeviceCache(_CountingLookup(), ttl_s=30))
    payload = orjson.dumps(good())
    await v.devices.prefetch(["dev-1"], now_monotonic=0)
    assert not isinstance(v.validate_cached(payload, topic_device_id="dev-1", now_monotonic=29), Rejection | None)
    assert v.validate_cached(payload, topic_device_id="dev-1", now_monotonic=30) is None


def test_clock_window_matches_the_limits() -> None:
    limits = ClockLimits(future=timedelta(seconds=10), past=timedelta(seconds=20))
    assert limits.window_s == (-20.0, 10.0)
    ev = parse_event(orjson.dumps(good(occurred_at=(NOW + timedelta(seconds=11)).isoformat())), topic_device_id="dev-1")
    assert not isinstance(ev, Rejection)
    assert clock_offset(ev, NOW, limits) == pytest.approx(11.0)
    assert clock_offset(ev, NOW, limits, limits.window_s) == pytest.approx(11.0)
    assert clock_offset(ev, NOW + timedelta(seconds=2), limits, limits.window_s) is None


@pytest.mark.parametrize("data", [{}, {"a": 1}, {"k": "v\x00"}, {"n": 2**70}, []])
def test_empty_data_is_storable_and_the_rest_still_checked(data: object) -> None:
    from gateways.validation import unstorable

    expected_ok = data in ({}, {"a": 1}, [])
    assert (unstorable(data) is None) is expected_ok

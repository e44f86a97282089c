"""Property-based tests of every parser of outside input besides device events (those are in
test_validation.py): the desk API's bodies and query strings, the HTTP ingest's credentials,
an officer app's actions and topics, the live feed's records; and the per-device rate limit."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatch.api import live
from dispatch.api.admin import _NEW_OFFICER, _NEW_SHIFT, _NEW_UNIT, _OFFICER_CHANGE
from dispatch.api.app import _action_decoder, _sign_in_decoder
from dispatch.api.common import decode_body, parse_int, parse_time
from gateways.http_ingest import parse_basic
from gateways.officer_actions_gateway import officer_from_topic, parse_action
from gateways.rate_limit import DeviceRateLimiter
from schemas.actions import ActionResult, OfficerAppAction
from schemas.events import DEVICE_ID_PATTERN, Category
from schemas.topics import device_id_from_events_topic

DECODERS = [_action_decoder, _sign_in_decoder, _NEW_OFFICER, _OFFICER_CHANGE, _NEW_SHIFT, _NEW_UNIT]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["action", "outcome", "referral", "text", "assignee", "officer_id", "password", "unit_code", "name", "role",
     "phone", "active", "starts_at", "ends_at", "code", "level", "parent_code", "name_en", "incident_id",
     "action_id", "x"]
)  # fmt: skip


@settings(max_examples=300)
@given(decoder=st.sampled_from(DECODERS), raw=st.binary(max_size=300))
def test_any_bytes_as_an_api_body_give_a_value_or_a_reasoned_422(decoder, raw: bytes) -> None:
    try:
        decode_body(raw, decoder)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:  # errors_middleware: 422 invalid_body
        assert str(exc)


@settings(max_examples=150)
@given(decoder=st.sampled_from(DECODERS), obj=st.dictionaries(field_names, json_values))
def test_any_json_object_as_an_api_body_gives_a_value_or_a_reasoned_422(decoder, obj) -> None:
    try:
        decode_body(msgspec.json.encode(obj), decoder)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        assert str(exc)


def test_invalid_utf8_and_deep_bodies_are_422_not_500() -> None:
    for raw in (b'{"action": "note", "text": "\xff"}', b"[" * 5000 + b"]" * 5000):
        with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
            decode_body(raw, _action_decoder)


@settings(max_examples=300)
@given(raw=st.none() | st.text(max_size=40))
def test_query_numbers_are_in_range_or_422(raw: str | None) -> None:
    try:
        v = parse_int("limit", raw, 200, lo=1, hi=1000)
    except web.HTTPUnprocessableEntity as exc:
        assert exc.text
    else:
        assert 1 <= v <= 1000 or (raw is None and v == 200)


@settings(max_examples=300)
@given(
    raw=st.none()
    | st.text(max_size=40)
    | st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
    | st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00 05:00"])
)
def test_query_times_are_usable_or_422(raw: str | None) -> None:
    try:
        v = parse_time("since", raw, None)
    except web.HTTPUnprocessableEntity as exc:
        assert exc.text
        return
    if v is not None:
        # What the handlers do with a time: a week back, the catch-up overlap, UTC for Postgres.
        assert v.tzinfo is not None
        v - timedelta(days=7)
        v - live.CATCH_UP_OVERLAP
        v.astimezone(UTC)


@settings(max_examples=300)
@given(user=st.text(max_size=80), password=st.text(max_size=80), scheme=st.sampled_from(["Basic", "basic", "Bearer"]))
def test_basic_credentials_are_a_device_id_and_a_password_or_nothing(user: str, password: str, scheme: str) -> None:
    header = f"{scheme} " + base64.b64encode(f"{user}:{password}".encode("utf-8", "surrogatepass")).decode()
    creds = parse_basic(header)
    if creds is not None:
        assert re.fullmatch(DEVICE_ID_PATTERN, creds[0]) and len(creds[0]) <= 64 and creds[1]
        assert "\x00" not in creds[0]


@settings(max_examples=200)
@given(header=st.text(max_size=200))
def test_any_authorization_header_is_parsed_or_refused(header: str) -> None:
    parse_basic(header)


@settings(max_examples=150)
@given(raw=st.binary(max_size=300) | st.dictionaries(field_names, json_values).map(msgspec.json.encode))
def test_officer_app_messages_give_an_action_or_a_reasoned_refusal(raw: bytes) -> None:
    parsed = parse_action(raw)
    if isinstance(parsed, ActionResult):
        assert not parsed.ok and parsed.code == "invalid_body" and parsed.message
    else:
        assert isinstance(parsed, OfficerAppAction)


def test_officer_app_message_with_invalid_utf8_is_refused_not_crashed() -> None:
    parsed = parse_action(b'{"action":"note","text":"\xff","incident_id":"x","action_id":"a-1"}')
    assert isinstance(parsed, ActionResult) and parsed.code == "invalid_body"


@given(topic=st.text(max_size=80))
def test_topics_give_an_id_or_nothing(topic: str) -> None:
    officer = officer_from_topic(topic)
    assert officer is None or (officer and "/" not in officer)
    device = device_id_from_events_topic(topic)
    assert device is None or (device and not {"/", "+", "#"} & set(device))


@settings(max_examples=200)
@given(raw=st.binary(max_size=300))
def test_live_feed_skips_records_it_cannot_read(raw: bytes) -> None:
    live.decode_update(raw)
    assert live.decode_update(b'{"incident_id": "\xff"}') is None


# -- the per-device rate limit -----------------------------------------------------------------


def limiter(rate: float = 2.0, burst: int = 5, interval: float = 1.0) -> DeviceRateLimiter:
    return DeviceRateLimiter(rate_per_s=rate, burst=burst, alarm_interval_s=interval)


def test_a_burst_passes_then_the_rate() -> None:
    lim = limiter()
    passed = [lim.admit("d", "device.heartbeat", Category.HEALTH, 0.0) for _ in range(10)]
    assert passed == [True] * 5 + [False] * 5
    assert lim.admit("d", "device.heartbeat", Category.HEALTH, 0.5)  # one token back after 0.5 s at 2/s
    assert not lim.admit("d", "device.heartbeat", Category.HEALTH, 0.5)


def test_one_flooding_device_does_not_limit_another() -> None:
    lim = limiter()
    for _ in range(100):
        lim.admit("flood", "device.heartbeat", Category.HEALTH, 0.0)
    assert all(lim.admit("calm", "device.heartbeat", Category.HEALTH, 0.0) for _ in range(5))


def test_alarms_beyond_the_limit_are_thinned_never_cut_off() -> None:
    lim = limiter(interval=1.0)
    t = 0.0
    for _ in range(50):  # empties the bucket
        lim.admit("d", "device.heartbeat", Category.HEALTH, t)
    # A press after the flood passes, a second one within the interval does not, a later one does.
    assert lim.admit("d", "alarm.panic", Category.ALARM, t)
    assert not lim.admit("d", "alarm.panic", Category.ALARM, t + 0.1)
    assert not lim.admit("d", "device.tamper", Category.MAINTENANCE, t + 0.1)
    # Another type (a fire after panics) and the resident's cancel pass at once.
    assert lim.admit("d", "alarm.fire", Category.ALARM, t + 0.1)
    assert lim.admit("d", "alarm.cancel", Category.CANCEL, t + 0.1)
    # Pressing all the time: one panic a second still gets through.
    passed = sum(lim.admit("d", "alarm.panic", Category.ALARM, t + i * 0.01) for i in range(20, 1020))
    assert 9 <= passed <= 21  # 10 s of presses every 10 ms: about one a second (plus refilled tokens)


def test_zero_rate_turns_the_limit_off() -> None:
    lim = limiter(rate=0)
    assert all(lim.admit("d", "device.heartbeat", Category.HEALTH, 0.0) for _ in range(1000))


def test_forgets_the_least_recent_devices_beyond_its_bound() -> None:
    lim = DeviceRateLimiter(rate_per_s=1, burst=1, alarm_interval_s=1, max_devices=100)
    for i in range(1000):
        lim.admit(f"d{i}", "device.heartbeat", Category.HEALTH, 0.0)
    assert len(lim._buckets) == 100


def test_clock_in_the_far_past_or_future_is_not_a_rejection_reason() -> None:
    from gateways.validation import Rejection, clock_offset, parse_event

    now = datetime.now(UTC)
    for occurred in ("2000-01-01T00:00:00Z", (now + timedelta(days=400)).isoformat()):
        raw = msgspec.json.encode(
            {"event_id": "e", "device_id": "d", "type": "alarm.panic", "occurred_at": occurred, "seq": 1}
        )
        ev = parse_event(raw, topic_device_id="d")
        assert not isinstance(ev, Rejection)
        assert clock_offset(ev, now) is not None

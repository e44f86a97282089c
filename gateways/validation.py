"""Validation of device input: the one place every ingress (MQTT, HTTP) uses.

`parse_event` is pure (size, JSON, schema, topic and payload device ids, clock); `Validator`
adds what needs the device registry (known, active).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import msgspec
import orjson

from schemas.events import EVENT_TYPES, MAX_PAYLOAD_BYTES, AnyEvent, DeviceEvent
from schemas.messages import RejectReason

_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(DeviceEvent)


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    detail: str
    device_id: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClockLimits:
    future: timedelta = timedelta(minutes=5)
    past: timedelta = timedelta(hours=24)


def parse_event(
    payload: bytes,
    *,
    topic_device_id: str | None,
    now: datetime,
    clock: ClockLimits = ClockLimits(),
) -> AnyEvent | Rejection:
    """Decode and check one event payload. Never raises for any input."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejection(
            RejectReason.TOO_LARGE,
            f"payload is {len(payload)} bytes; the limit is {MAX_PAYLOAD_BYTES}",
            device_id=topic_device_id,
        )
    try:
        event: AnyEvent = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        return _invalid(payload, str(exc), topic_device_id)
    except msgspec.DecodeError as exc:
        return Rejection(RejectReason.MALFORMED, f"not valid JSON: {exc}", topic_device_id)
    except RecursionError:
        return Rejection(RejectReason.MALFORMED, "JSON nested too deeply", topic_device_id)
    if topic_device_id is None:
        return Rejection(RejectReason.BAD_TOPIC, "not a device events topic", None, event.event_id)
    if event.device_id != topic_device_id:
        return Rejection(
            RejectReason.DEVICE_MISMATCH,
            f"payload device_id {event.device_id!r} differs from the topic's {topic_device_id!r}",
            topic_device_id,
            event.event_id,
        )
    if event.occurred_at > now + clock.future:
        return Rejection(
            RejectReason.CLOCK_SKEW,
            f"occurred_at {event.occurred_at.isoformat()} is more than "
            f"{int(clock.future.total_seconds())} s ahead of the platform clock",
            topic_device_id,
            event.event_id,
        )
    if event.occurred_at < now - clock.past:
        return Rejection(
            RejectReason.CLOCK_SKEW,
            f"occurred_at {event.occurred_at.isoformat()} is more than {int(clock.past.total_seconds())} s in the past",
            topic_device_id,
            event.event_id,
        )
    return event


def _invalid(payload: bytes, message: str, topic_device_id: str | None) -> Rejection:
    """Tell an unknown event type apart from other schema errors, and salvage the event id."""
    event_id = None
    reason = RejectReason.INVALID
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        raw_id = obj.get("event_id")
        if isinstance(raw_id, str) and len(raw_id) <= 64:
            event_id = raw_id
        raw_type = obj.get("type")
        if isinstance(raw_type, str) and raw_type not in EVENT_TYPES:
            reason = RejectReason.UNKNOWN_TYPE
            message = f"unknown event type {raw_type[:64]!r}; known: {', '.join(EVENT_TYPES)}"
    return Rejection(reason, message, topic_device_id, event_id)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    grid_code: str
    active: bool


class DeviceLookup(Protocol):
    async def __call__(self, device_id: str) -> DeviceInfo | None: ...

    async def many(self, device_ids: list[str]) -> dict[str, DeviceInfo]: ...


class DeviceCache:
    """Device registry entries, cached for a short time (found and not found alike)."""

    def __init__(self, lookup: DeviceLookup, *, ttl_s: float, max_entries: int = 200_000) -> None:
        self._lookup = lookup
        self._ttl = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, DeviceInfo | None]] = OrderedDict()

    async def get(self, device_id: str, now_monotonic: float) -> DeviceInfo | None:
        hit = self._entries.get(device_id)
        if hit is not None and now_monotonic - hit[0] < self._ttl:
            return hit[1]
        info = await self._lookup(device_id)
        self._entries[device_id] = (now_monotonic, info)
        self._entries.move_to_end(device_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return info

    async def prefetch(self, device_ids: list[str], now_monotonic: float) -> None:
        """Look up, in one go, the devices of a batch that are not cached (or stale), so the
        `get` calls that follow do not wait one by one."""
        missing = []
        for d in dict.fromkeys(device_ids):
            hit = self._entries.get(d)
            if hit is None or now_monotonic - hit[0] >= self._ttl:
                missing.append(d)
        if not missing:
            return
        found = await self._lookup.many(missing)
        for d in missing:
            self._entries[d] = (now_monotonic, found.get(d))
            self._entries.move_to_end(d)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget(self, device_id: str) -> None:
        self._entries.pop(device_id, None)


class Validator:
    def __init__(self, devices: DeviceCache, clock: ClockLimits) -> None:
        self.devices = devices
        self._devices = devices
        self._clock = clock

    async def validate(
        self, payload: bytes, *, topic_device_id: str | None, now: datetime, now_monotonic: float
    ) -> AnyEvent | Rejection:
        result = parse_event(payload, topic_device_id=topic_device_id, now=now, clock=self._clock)
        if isinstance(result, Rejection):
            return result
        info = await self._devices.get(result.device_id, now_monotonic)
        if info is None:
            return Rejection(
                RejectReason.UNKNOWN_DEVICE,
                f"device {result.device_id!r} is not provisioned",
                result.device_id,
                result.event_id,
            )
        if not info.active:
            return Rejection(
                RejectReason.INACTIVE_DEVICE,
                f"device {result.device_id!r} is deactivated",
                result.device_id,
                result.event_id,
            )
        return result

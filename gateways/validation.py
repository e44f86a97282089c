"""Validation of device input: the one place every ingress (MQTT, HTTP) uses.

`parse_event` is pure (size, UTF-8, JSON, schema, storable `data`, topic and payload device
ids); `clock_offset` tells whether the device's clock is off; `Validator` adds what needs the
device registry (known, active).

A wrong device clock never costs an alarm: an event whose `occurred_at` lies outside the
accepted window is accepted and flagged with its offset, and the platform's own receive time
stands in for it (deadlines run from the receive time in any case).
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

MAX_DATA_DEPTH = 32
"""`data` nested deeper than this is refused (Postgres' jsonb and the JSON encoders have limits)."""
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what the store's JSON encoder (orjson) takes


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

    @property
    def window_s(self) -> tuple[float, float]:
        """The accepted offsets in seconds, (lowest, highest)."""
        return -self.past.total_seconds(), self.future.total_seconds()


def parse_event(
    payload: bytes,
    *,
    topic_device_id: str | None,
) -> AnyEvent | Rejection:
    """Decode and check one event payload. Never raises for any input. (The device's clock
    is checked apart, by `clock_offset`: a wrong clock flags an event, never refuses it.)"""
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
    except UnicodeDecodeError as exc:
        return Rejection(RejectReason.MALFORMED, f"not valid UTF-8: byte {exc.start}", topic_device_id)
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
    problem = unstorable(event.data)
    if problem is not None:
        return Rejection(RejectReason.INVALID, f"data: {problem}", topic_device_id, event.event_id)
    return event


def unstorable(data: Any) -> str | None:
    """Why `data` could not be stored as Postgres jsonb, or None when it can.

    Postgres text and jsonb hold no NUL character; the JSON encoder of the store takes
    integers of at most 64 bits and a bounded depth. Checked here, so that an event the
    gateway accepted is never one the worker cannot record."""
    if not data and type(data) is dict:  # most events: no data at all
        return None
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return "a text holds a NUL character (\\u0000)"
        elif isinstance(value, bool) or value is None or isinstance(value, float):
            continue
        elif isinstance(value, int):
            if not _INT_MIN <= value <= _INT_MAX:
                return f"the number {str(value)[:20]}... does not fit in 64 bits"
        elif isinstance(value, dict | list):
            if depth > MAX_DATA_DEPTH:
                return f"nested deeper than {MAX_DATA_DEPTH} levels"
            if isinstance(value, dict):
                for k, v in value.items():
                    if "\x00" in k:
                        return "a key holds a NUL character (\\u0000)"
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in value)
        else:  # pragma: no cover - JSON decodes to nothing else
            return f"unexpected value of type {type(value).__name__}"
    return None


def clock_offset(
    event: AnyEvent, now: datetime, clock: ClockLimits = ClockLimits(), window_s: tuple[float, float] | None = None
) -> float | None:
    """Seconds the event's `occurred_at` lies from `now` (positive: ahead), when that is
    outside the accepted window; None when the device's clock is fine. (`window_s`: the
    clock's `window_s`, when the caller keeps it.)"""
    low, high = window_s or clock.window_s
    offset = (event.occurred_at - now).total_seconds()
    if low <= offset <= high:
        return None
    return offset


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

    def put_many(self, infos: list[DeviceInfo], now_monotonic: float) -> None:
        """Entries read from the registry in bulk (the gateway's mirror of it; see
        gateways/device_mirror.py), trusted from `now_monotonic` like a lookup's."""
        for info in infos:
            self._entries[info.device_id] = (now_monotonic, info)
            self._entries.move_to_end(info.device_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    @property
    def max_entries(self) -> int:
        return self._max

    def fresh(self, device_id: str, now_monotonic: float) -> bool:
        """Whether `get` would answer for this device without asking the registry."""
        hit = self._entries.get(device_id)
        return hit is not None and now_monotonic - hit[0] < self._ttl

    def cached(self, device_id: str) -> DeviceInfo | None:
        """The cached entry of a device (check `fresh` first): None when unknown."""
        hit = self._entries.get(device_id)
        return None if hit is None else hit[1]

    def forget(self, device_id: str) -> None:
        self._entries.pop(device_id, None)

    def clear(self) -> None:
        self._entries.clear()


class Validator:
    def __init__(self, devices: DeviceCache) -> None:
        self._devices = devices

    @property
    def devices(self) -> DeviceCache:
        return self._devices

    async def validate(
        self, payload: bytes, *, topic_device_id: str | None, now_monotonic: float
    ) -> AnyEvent | Rejection:
        result = parse_event(payload, topic_device_id=topic_device_id)
        if isinstance(result, Rejection):
            return result
        return self.against_registry(result, await self._devices.get(result.device_id, now_monotonic))

    def validate_cached(
        self, payload: bytes, *, topic_device_id: str | None, now_monotonic: float
    ) -> AnyEvent | Rejection | None:
        """`validate` without waiting: None when it would have to ask the registry (the device
        is not in the cache, or its entry is stale); then `validate` is the way."""
        result = parse_event(payload, topic_device_id=topic_device_id)
        if isinstance(result, Rejection):
            return result
        if not self._devices.fresh(result.device_id, now_monotonic):
            return None
        return self.against_registry(result, self._devices.cached(result.device_id))

    @staticmethod
    def against_registry(result: AnyEvent, info: DeviceInfo | None) -> AnyEvent | Rejection:
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

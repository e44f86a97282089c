"""Per-device rate limit of the gateways: a token bucket per device.

A device may send `rate_per_s` events a second on average and `burst` at once. Beyond that:

- heartbeats and maintenance events (tamper, fault, low battery) are refused with the reason
  `rate_limited` (a receipt to the device, a dead-letter record) — a flooding device's
  telemetry never delays anyone else's alarm;
- alarms and cancels are thinned, never cut off: one of each event type per device still
  passes every `alarm_interval_s` however hard the device floods, and the rest are refused
  with `rate_limited`. A repeated press joins the incident the first one opened, so the
  refused ones carry nothing it lacks, and a press of another type (a fire alarm after a
  flood of intrusion alarms) passes at once.

Buckets live in the gateway's memory, one set per gateway process (with several gateways
sharing a subscription, a device's limit is per gateway it reaches); the least recently seen
devices are forgotten beyond `max_devices`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from schemas.events import Category

_URGENT = frozenset({Category.ALARM, Category.CANCEL})


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    alarms: dict[str, float] = field(default_factory=dict)  # event type -> when one last passed


class DeviceRateLimiter:
    def __init__(self, *, rate_per_s: float, burst: float, alarm_interval_s: float, max_devices: int = 200_000) -> None:
        self.rate = rate_per_s
        self.burst = max(1.0, burst)
        self.alarm_interval = alarm_interval_s
        self.max_devices = max_devices
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def admit(self, device_id: str, event_type: str, category: Category, now: float) -> bool:
        """Whether this event of this device may pass at monotonic time `now`."""
        if not self.enabled:
            return True
        b = self._buckets.get(device_id)
        if b is None:
            b = _Bucket(self.burst, now)
            self._buckets[device_id] = b
            while len(self._buckets) > self.max_devices:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(device_id)
            if now > b.at:
                tokens = b.tokens + (now - b.at) * self.rate
                b.tokens = tokens if tokens < self.burst else self.burst
                b.at = now
        urgent = category in _URGENT
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            if urgent:
                b.alarms[event_type] = now
            return True
        if urgent:
            last = b.alarms.get(event_type)
            if last is None or now - last >= self.alarm_interval:
                b.alarms[event_type] = now
                return True
        return False

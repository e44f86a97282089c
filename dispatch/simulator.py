"""A device simulator: demo devices connect over MQTT with their own credentials and press.

It measures what a resident and an officer would see: press to the device's "accepted"
receipt, press to the "incident opened" receipt, and press to the officer's notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from core.mqtt import MqttClient, MqttError
from core.settings import Settings
from core.timeutil import utcnow
from dispatch.credentials import demo_password
from schemas import topics

log = structlog.get_logger(__name__)

ALARM_BY_KIND = {
    "panic_button": ["alarm.panic"],
    "pendant": ["alarm.panic", "alarm.panic", "alarm.fall", "alarm.medical"],
    "alarm_column": ["alarm.panic"],
    "smoke_detector": ["alarm.fire"],
    "gas_detector": ["alarm.gas"],
    "fall_detector": ["alarm.fall"],
    "door_sensor": ["alarm.intrusion"],
}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[k]


@dataclass
class SimStats:
    presses_sent: int = 0
    presses_acked: int = 0  # the broker's PUBACK
    publish_errors: int = 0
    heartbeats_sent: int = 0
    receipts: dict[str, int] = field(default_factory=dict)
    notifications: int = 0  # first pages of incidents opened by our presses
    escalations: int = 0
    officer_actions: int = 0
    to_accepted_ms: list[float] = field(default_factory=list)
    to_incident_ms: list[float] = field(default_factory=list)
    to_notification_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def pct(v: list[float]) -> dict[str, float | None]:
            return {
                "n": len(v),
                "p50": _r(percentile(v, 0.5)),
                "p99": _r(percentile(v, 0.99)),
                "max": _r(max(v) if v else None),
            }

        return {
            "presses_sent": self.presses_sent,
            "presses_acked_by_broker": self.presses_acked,
            "publish_errors": self.publish_errors,
            "heartbeats_sent": self.heartbeats_sent,
            "receipts": dict(self.receipts),
            "officer_notifications": self.notifications,
            "escalations_seen": self.escalations,
            "simulated_officer_actions": self.officer_actions,
            "press_to_accepted_receipt_ms": pct(self.to_accepted_ms),
            "press_to_incident_receipt_ms": pct(self.to_incident_ms),
            "press_to_notification_ms": pct(self.to_notification_ms),
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


@dataclass(frozen=True, slots=True)
class SimDevice:
    device_id: str
    kind: str
    password: str


class Simulator:
    def __init__(
        self,
        settings: Settings,
        devices: list[SimDevice],
        *,
        rate: float,
        heartbeat_share: float = 0.0,
        seed: int | None = None,
        on_tick: Callable[[SimStats], None] | None = None,
        respond: bool = False,
    ) -> None:
        self.settings = settings
        self.devices = devices
        self.rate = rate
        self.heartbeat_share = heartbeat_share
        self.rng = random.Random(seed)
        self.stats = SimStats()
        self.on_tick = on_tick
        self.respond = respond
        self._responding: set[str] = set()
        self._clients: dict[str, MqttClient] = {}
        self._seq: dict[str, int] = {}
        self._pressed: dict[str, float] = {}  # event_id -> monotonic time of the press
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self, *, duration: float | None = None, stop: asyncio.Event | None = None) -> SimStats:
        stop = stop or asyncio.Event()
        observer = MqttClient(
            host=self.settings.mqtt_host,
            port=self.settings.mqtt_port,
            client_id=f"pingan-sim-observer-{uuid.uuid4().hex[:8]}",
            username=self.settings.mqtt_username,
            password=self.settings.mqtt_password,
            name="sim.observer",
        )
        await observer.start()
        try:
            await observer.subscribe(topics.OFFICER_NOTIFICATIONS.format(officer_id="+"), qos=1)
            self._spawn(self._watch_notifications(observer), "sim.notifications")
            await self._connect_all()
            log.info("simulator connected", devices=len(self._clients))
            await self._press_loop(duration, stop)
            # let receipts and notifications of the last presses arrive
            await asyncio.sleep(2.0)
        finally:
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.gather(*(c.stop() for c in self._clients.values()), return_exceptions=True)
            await observer.stop()
        return self.stats

    def _spawn(self, coro: Any, name: str) -> None:
        t = asyncio.create_task(coro, name=name)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _connect_all(self) -> None:
        sem = asyncio.Semaphore(50)

        async def connect(d: SimDevice) -> None:
            async with sem:
                c = MqttClient(
                    host=self.settings.mqtt_host,
                    port=self.settings.mqtt_port,
                    client_id=f"sim-{d.device_id}",
                    username=d.device_id,
                    password=d.password,
                    will=None,
                    name=f"sim.{d.device_id}",
                )
                try:
                    await c.start()
                    await c.subscribe(topics.device_receipts(d.device_id), qos=1)
                except MqttError as exc:
                    log.warning("device could not connect", device_id=d.device_id, error=repr(exc))
                    await c.stop()
                    return
                self._clients[d.device_id] = c
                self._spawn(self._watch_receipts(c), f"sim.receipts.{d.device_id}")

        await asyncio.gather(*(connect(d) for d in self.devices))

    async def _press_loop(self, duration: float | None, stop: asyncio.Event) -> None:
        started = time.monotonic()
        interval = 1.0 / self.rate if self.rate > 0 else 1.0
        next_at = started
        last_tick = started
        ids = list(self._clients)
        by_id = {d.device_id: d for d in self.devices}
        while not stop.is_set() and ids:
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            if now >= next_at:
                device = by_id[self.rng.choice(ids)]
                if self.rng.random() < self.heartbeat_share:
                    self.press(device, "device.heartbeat")
                else:
                    self.press(device, self.rng.choice(ALARM_BY_KIND.get(device.kind, ["alarm.panic"])))
                next_at += interval
                if next_at < now - 1.0:  # fell behind by more than a second: do not burst
                    next_at = now
            if self.on_tick and now - last_tick >= 2.0:
                last_tick = now
                self.on_tick(self.stats)
            await asyncio.sleep(max(0.0, min(next_at - time.monotonic(), 0.25)))

    def press(self, device: SimDevice, event_type: str) -> str:
        client = self._clients[device.device_id]
        seq = self._seq.get(device.device_id, 0) + 1
        self._seq[device.device_id] = seq
        event_id = f"sim-{uuid.uuid4().hex}"
        payload = orjson.dumps(
            {
                "event_id": event_id,
                "device_id": device.device_id,
                "type": event_type,
                "occurred_at": utcnow().isoformat(),
                "seq": seq,
                "battery": self.rng.randint(30, 100),
            }
        )
        if event_type == "device.heartbeat":
            self.stats.heartbeats_sent += 1
        else:
            self.stats.presses_sent += 1
            self._pressed[event_id] = time.monotonic()
        fut = client.publish_nowait(topics.device_events(device.device_id), payload, qos=1)
        fut.add_done_callback(self._on_puback)
        return event_id

    def _on_puback(self, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self.stats.publish_errors += 1
        else:
            self.stats.presses_acked += 1

    async def _watch_receipts(self, client: MqttClient) -> None:
        async for msg in client.messages():
            try:
                r = orjson.loads(msg.payload)
            except orjson.JSONDecodeError:
                continue
            status = r.get("status", "?")
            self.stats.receipts[status] = self.stats.receipts.get(status, 0) + 1
            t0 = self._pressed.get(r.get("event_id", ""))
            if t0 is None:
                continue
            ms = (msg.received_monotonic - t0) * 1000
            if status == "accepted":
                self.stats.to_accepted_ms.append(ms)
            elif status in ("incident_opened", "incident_joined"):
                self.stats.to_incident_ms.append(ms)

    async def _watch_notifications(self, observer: MqttClient) -> None:
        first_paged: set[str] = set()
        async for msg in observer.messages():
            with contextlib.suppress(ValueError):
                n = orjson.loads(msg.payload)
                kind = n.get("kind")
                if kind == "escalated":
                    self.stats.escalations += 1
                if kind not in ("incident_opened", "major_incident", "escalated"):
                    continue
                incident_id = n.get("incident_id", "")
                if kind != "escalated":
                    t0 = self._pressed.get(n.get("event_id", ""))
                    if t0 is not None and incident_id not in first_paged:
                        first_paged.add(incident_id)
                        self.stats.notifications += 1
                        self.stats.to_notification_ms.append((msg.received_monotonic - t0) * 1000)
                if self.respond and incident_id not in self._responding:
                    self._responding.add(incident_id)
                    self._spawn(self._respond(observer, n["officer_id"], incident_id), f"sim.respond.{incident_id}")

    async def _respond(self, client: MqttClient, officer_id: str, incident_id: str) -> None:
        """A simulated officer: most acknowledge within seconds, go on scene and resolve; some
        never answer, so the demo shows escalation too."""
        if self.rng.random() < 0.25:
            return
        steps = [
            ("acknowledge", {}),
            ("on_scene", {}),
            ("resolve", {"outcome": self.rng.choice(["resolved", "resolved", "resolved", "false_alarm"])}),
        ]
        for action, extra in steps:
            await asyncio.sleep(self.rng.uniform(3, 15))
            body = {"action_id": f"sim-{uuid.uuid4().hex}", "incident_id": incident_id, "action": action, **extra}
            try:
                await client.publish(f"{topics.MQTT_ROOT}/officers/{officer_id}/actions", orjson.dumps(body), qos=1)
                self.stats.officer_actions += 1
            except MqttError:
                return


async def load_demo_devices(conn: Any, settings: Settings, limit: int) -> list[SimDevice]:
    rows = await conn.fetch(
        "SELECT device_id, kind FROM devices WHERE active AND device_id ~ '^dev-[0-9]{15}-[0-9]{3}$' ORDER BY device_id"
    )
    rng = random.Random(7)
    chosen = rng.sample(list(rows), min(limit, len(rows)))
    return [SimDevice(r["device_id"], r["kind"], demo_password(settings, r["device_id"])) for r in chosen]

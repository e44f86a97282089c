"""The load generator: a fleet of simulated devices (one MQTT connection each, their own
credentials), presses at a set rate, and what the resident and the officer see of them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.lean_mqtt import LeanClient, LeanMqttError, keep_alive
from core.mqtt import MqttClient, MqttError
from core.settings import Settings
from core.timeutil import utcnow
from schemas import topics


@dataclass
class StepResult:
    label: str
    rate: float
    duration_s: float
    sent: int = 0
    acked: int = 0
    publish_errors: int = 0
    achieved_rate: float = 0.0
    to_notification_ms: list[float] = field(default_factory=list)
    to_receipt_ms: list[float] = field(default_factory=list)
    to_puback_ms: list[float] = field(default_factory=list)
    sent_until: float = 0.0  # monotonic: when the last press of the step was sent


class Fleet:
    """Devices on the platform's own MQTT client: they reconnect and resend what was not
    acknowledged (the fault suite restarts the broker under them)."""

    def __init__(self, settings: Settings, device_ids: list[str], password: str, *, receipts: bool = True) -> None:
        self.settings = settings
        self.device_ids = device_ids
        self.password = password
        self.receipts = receipts
        self.clients: list[MqttClient] = []
        self._seq: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.pressed: dict[str, float] = {}  # event_id -> monotonic press time
        self.receipt_ms: dict[str, float] = {}
        self.puback_ms: dict[str, float] = {}  # press -> the broker's PUBACK (Kafka holds the event)
        self._next = 0
        # Alarms latch: a device whose incident is still open would join it instead of opening
        # a new one. An alarm press goes only to a device that is free: freed a while after its
        # incident was notified (the resolver closes notified incidents every half second).
        self._free: collections.deque[MqttClient] = collections.deque()
        self._busy: dict[str, MqttClient] = {}  # event_id -> the device that pressed it
        self.joined = 0  # presses that joined an open incident (must stay 0)
        # Their event ids: a press that joined an incident pages nobody (the incident's officer
        # was paged when it opened), so no page is awaited for it.
        self.joined_ids: set[str] = set()
        self.starved = 0  # presses deferred because no device was free
        # Event ids: the step's tag, this fleet's own prefix and a counter (unique without a
        # random draw per press: uuid4 is a getrandom call, a tenth of the generator's CPU).
        self._id_prefix = uuid.uuid4().hex[:6]
        self._pressed_count = 0

    async def connect(self, concurrency: int = 200) -> float:
        sem = asyncio.Semaphore(concurrency)
        t0 = time.monotonic()

        async def one(device_id: str) -> MqttClient | None:
            async with sem:
                c = MqttClient(
                    host=self.settings.mqtt_host,
                    port=self.settings.mqtt_port,
                    client_id=f"bench-{device_id}",
                    username=device_id,
                    password=self.password,
                    keepalive=120,
                    name="bench.device",
                )
                try:
                    await c.start(timeout=30)
                    if self.receipts:
                        await c.subscribe(topics.device_receipts(device_id), qos=1)
                except (MqttError, TimeoutError):
                    await c.stop()
                    return None
                return c

        results = await asyncio.gather(*(one(d) for d in self.device_ids))
        self.clients = [c for c in results if c is not None]
        self._free.extend(self.clients)
        if self.receipts:
            for c in self.clients:
                self._tasks.append(asyncio.create_task(self._read_receipts(c), name="bench.receipts"))
        return time.monotonic() - t0

    async def _read_receipts(self, c: MqttClient) -> None:
        async for msg in c.messages():
            self._on_receipt(msg.topic, msg.payload, msg.received_monotonic)

    def _on_receipt(self, topic: str, payload: bytes, at: float) -> None:
        with contextlib.suppress(ValueError):
            r = orjson.loads(payload)
            if r.get("status") == "incident_joined":
                self.joined += 1
                self.joined_ids.add(r.get("event_id", ""))
                self.release(r.get("event_id", ""))
            if r.get("status") == "accepted":
                t0 = self.pressed.get(r.get("event_id", ""))
                if t0 is not None:
                    self.receipt_ms[r["event_id"]] = (at - t0) * 1000

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.stop() for c in self.clients), return_exceptions=True)

    def release(self, event_id: str, after_s: float = 1.5) -> None:
        c = self._busy.pop(event_id, None)
        if c is not None:
            asyncio.get_running_loop().call_later(after_s, self._free.append, c)

    def seqs(self) -> dict[str, int]:
        """device id -> the sequence of the last event it sent."""
        return dict(self._seq)

    def can_press(self, type_: str) -> bool:
        return type_ == "device.heartbeat" or bool(self._free)

    def press(self, type_: str, tag: str, client: Any = None) -> tuple[str, asyncio.Future[None]]:
        """A device publishes one event (an alarm from a free device, a heartbeat from the next
        one round robin, or anything from `client`); returns the event id and the PUBACK future."""
        if client is not None:
            c = client
        elif type_ == "device.heartbeat":
            c = self.clients[self._next % len(self.clients)]
            self._next += 1
        else:
            c = self._free.popleft()
        device_id = c.client_id.removeprefix("bench-")
        seq = self._seq.get(device_id, 0) + 1
        self._seq[device_id] = seq
        self._pressed_count += 1
        event_id = f"{tag}-{self._id_prefix}{self._pressed_count:010x}"
        payload = orjson.dumps(
            {
                "event_id": event_id,
                "device_id": device_id,
                "type": type_,
                "occurred_at": utcnow().isoformat(),
                "seq": seq,
            }
        )
        fut = self._publish(c, topics.device_events(device_id), payload)
        if type_ != "device.heartbeat" and client is None:
            t0 = self.pressed[event_id] = time.monotonic()
            self._busy[event_id] = c

            def acked(f: asyncio.Future[None], event_id: str = event_id, t0: float = t0) -> None:
                if not f.cancelled() and f.exception() is None:
                    self.puback_ms[event_id] = (time.monotonic() - t0) * 1000

            fut.add_done_callback(acked)
        return event_id, fut

    def _publish(self, c: Any, topic: str, payload: bytes) -> asyncio.Future[None]:
        return c.publish_nowait(topic, payload, qos=1)  # type: ignore[no-any-return]


class OfficerProbe:
    """Subscribes to every officer's notifications, as the officer apps would receive them."""

    def __init__(self, settings: Settings, fleet: Fleet) -> None:
        self.settings = settings
        self.fleet = fleet
        self.notified_ms: dict[str, float] = {}
        self.client = MqttClient(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            client_id=f"bench-officers-{uuid.uuid4().hex[:6]}",
            username=settings.mqtt_username,
            password=settings.mqtt_password,
            name="bench.probe",
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.start()
        await self.client.subscribe(topics.OFFICER_NOTIFICATIONS.format(officer_id="+"), qos=1)
        self._task = asyncio.create_task(self._read(), name="bench.probe")

    async def _read(self) -> None:
        async for msg in self.client.messages():
            with contextlib.suppress(ValueError):
                n = orjson.loads(msg.payload)
                if n.get("kind") != "incident_opened":
                    continue
                eid = n.get("event_id", "")
                t0 = self.fleet.pressed.get(eid)
                if t0 is not None and eid not in self.notified_ms:
                    self.notified_ms[eid] = (msg.received_monotonic - t0) * 1000
                    self.fleet.release(eid)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.stop()


class LeanFleet(Fleet):
    """Devices on the benchmark's lean MQTT client (bench.lean_mqtt): a fraction of the CPU per
    message, so the generator is not what the benchmark measures. No reconnects."""

    async def connect(self, concurrency: int = 200) -> float:
        sem = asyncio.Semaphore(concurrency)
        t0 = time.monotonic()

        async def one(device_id: str) -> LeanClient | None:
            async with sem:
                c = LeanClient(f"bench-{device_id}", on_message=self._on_receipt if self.receipts else None)
                try:
                    await c.connect(self.settings.mqtt_host, self.settings.mqtt_port, device_id, self.password)
                    if self.receipts:
                        await c.subscribe(topics.device_receipts(device_id), qos=1)
                except (LeanMqttError, OSError, TimeoutError):
                    await c.close()
                    return None
                return c

        results = await asyncio.gather(*(one(d) for d in self.device_ids))
        self.clients = [c for c in results if c is not None]
        self._free.extend(self.clients)
        self._tasks.append(asyncio.create_task(keep_alive(self.clients), name="bench.keepalive"))
        return time.monotonic() - t0

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)

    def _publish(self, c: Any, topic: str, payload: bytes) -> asyncio.Future[None]:
        return c.publish(topic, payload)  # type: ignore[no-any-return]


class LeanOfficerProbe:
    """OfficerProbe on the lean client."""

    def __init__(self, settings: Settings, fleet: Fleet, *, ping_every_s: float = 60.0) -> None:
        self.settings = settings
        self.fleet = fleet
        self.ping_every_s = ping_every_s
        self.notified_ms: dict[str, float] = {}
        self.client = LeanClient(f"bench-officers-{uuid.uuid4().hex[:6]}", on_message=self._on_notification)
        self._keepalive: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        await self.client.connect(s.mqtt_host, s.mqtt_port, s.mqtt_username, s.mqtt_password)
        await self.client.subscribe(topics.OFFICER_NOTIFICATIONS.format(officer_id="+"), qos=1)
        # Pings between the steps that page nobody (heartbeats for minutes): without them the
        # broker drops the probe after 1.5 × its keepalive, and every page after is missed.
        self._keepalive = asyncio.create_task(
            keep_alive([self.client], self.ping_every_s), name="bench.probe.keepalive"
        )

    @property
    def connected(self) -> bool:
        return self.client.connected

    def _on_notification(self, topic: str, payload: bytes, at: float) -> None:
        with contextlib.suppress(ValueError):
            n = orjson.loads(payload)
            if n.get("kind") != "incident_opened":
                return
            eid = n.get("event_id", "")
            t0 = self.fleet.pressed.get(eid)
            if t0 is not None and eid not in self.notified_ms:
                self.notified_ms[eid] = (at - t0) * 1000
                self.fleet.release(eid)

    async def stop(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.gather(self._keepalive, return_exceptions=True)
        await self.client.close()


async def drive(fleet: Any, *, rate: float, duration: float, type_: str, tag: str) -> tuple[StepResult, list[str]]:
    """Publish `rate` events a second for `duration` seconds: every few milliseconds, as many
    as are due by the clock (so a late wake-up is made up, never lost)."""
    res = StepResult(tag, rate, duration)
    ids: list[str] = []
    futures: list[asyncio.Future[None]] = []
    t0 = time.monotonic()
    while (now := time.monotonic()) - t0 < duration:
        due = int(rate * (now - t0)) + 1
        while len(ids) < due:
            if not fleet.can_press(type_):
                fleet.starved += 1
                break
            eid, fut = fleet.press(type_, tag)
            ids.append(eid)
            futures.append(fut)
        await asyncio.sleep(0.002)
    res.sent_until = time.monotonic()
    res.sent = len(ids)
    res.achieved_rate = res.sent / (res.sent_until - t0)
    res.acked = await count_acked(futures, timeout=60)
    res.publish_errors = res.sent - res.acked
    return res, ids


async def count_acked(futures: list[asyncio.Future[None]], *, timeout: float) -> int:
    """How many PUBACK futures succeeded, waiting up to `timeout` for those still open. Only
    those are waited for, together: a task per future (wait_for in a gather) cost the load
    generator seconds of CPU after a step of hundreds of thousands of heartbeats, while the
    system under test was draining its backlog on the same cores."""
    pending = [f for f in futures if not f.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout)
    return sum(1 for f in futures if f.done() and not f.cancelled() and f.exception() is None)


async def wait_until(pred: Any, timeout: float, interval: float = 0.25) -> float:
    """Seconds until `pred()` (awaitable) is true, or the timeout (then -1)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if await pred():
            return time.monotonic() - t0
        await asyncio.sleep(interval)
    return -1.0


def collect(res: StepResult, ids: Iterable[str], fleet: Any, probe: Any) -> StepResult:
    for eid in ids:
        if eid in probe.notified_ms:
            res.to_notification_ms.append(probe.notified_ms[eid])
        if eid in fleet.receipt_ms:
            res.to_receipt_ms.append(fleet.receipt_ms[eid])
        if eid in fleet.puback_ms:
            res.to_puback_ms.append(fleet.puback_ms[eid])
    return res

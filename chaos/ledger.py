"""What the devices sent and what the platform made of it: the load (presses at a rate, each
from a device without an open incident), an officer probe and the ledger of one scenario."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from bench.load import Fleet
from bench.stats import summary
from core.mqtt import MqttClient
from core.settings import Settings
from schemas import topics


class Probe:
    """Every officer's notifications, as the officer apps receive them (persistent session, so
    a broker restart does not hide notifications published meanwhile)."""

    def __init__(self, settings: Settings, fleet: Fleet) -> None:
        self.fleet = fleet
        self.notified_ms: dict[str, float] = {}  # event_id -> press to first incident_opened
        self.by_notification: Counter[int] = Counter()  # notification_id -> times received
        self.opened: dict[tuple[str, str], set[int]] = {}  # (incident, officer) -> notification ids
        self.event_of_incident: dict[str, str] = {}
        self.client = MqttClient(
            host=settings.mqtt_host,
            port=settings.mqtt_port,
            client_id=f"chaos-officers-{uuid.uuid4().hex[:6]}",
            username=settings.mqtt_username,
            password=settings.mqtt_password,
            clean_start=False,
            session_expiry=600,
            name="chaos.probe",
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.start(timeout=30)
        await self.client.subscribe(topics.OFFICER_NOTIFICATIONS.format(officer_id="+"), qos=1)
        self._task = asyncio.create_task(self._read(), name="chaos.probe")

    async def _read(self) -> None:
        async for msg in self.client.messages():
            with contextlib.suppress(ValueError, TypeError):
                n = orjson.loads(msg.payload)
                if n.get("kind") != "incident_opened":
                    continue
                eid = n.get("event_id", "")
                self.by_notification[int(n["notification_id"])] += 1
                key = (str(n.get("incident_id")), str(n.get("officer_id")))
                self.opened.setdefault(key, set()).add(int(n["notification_id"]))
                self.event_of_incident[key[0]] = eid
                t0 = self.fleet.pressed.get(eid)
                if t0 is not None and eid not in self.notified_ms:
                    self.notified_ms[eid] = (msg.received_monotonic - t0) * 1000
                    self.fleet.release(eid)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.stop()


class Resolver:
    """Officers who close every notified incident at once, so its device is free for its next
    press (alarms latch otherwise). Keeps going through a Postgres restart."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool
        self.task: asyncio.Task[None] | None = None
        self.errors = 0

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="chaos.resolver")

    async def _run(self) -> None:
        while True:
            try:
                await self.pool.execute(
                    "UPDATE incidents SET status = 'resolved', outcome = 'resolved', closed_at = clock_timestamp(), "
                    "closed_by = 'chaos', awaiting = 'none', deadline_at = NULL, remind_at = NULL, due_at = NULL "
                    "WHERE closed_at IS NULL AND first_notified_at IS NOT NULL"
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                self.errors += 1
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


@dataclass
class Sent:
    tag: str
    ids: list[str] = field(default_factory=list)
    acked: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    starved: int = 0
    duration_s: float = 0.0
    pressed_at: dict[str, float] = field(default_factory=dict)  # monotonic
    acked_at: dict[str, float] = field(default_factory=dict)
    fault: tuple[float, float] = (0.0, 0.0)  # monotonic: fault injected, service/component back


async def drive(fleet: Fleet, *, rate: float, duration: float, tag: str, ack_timeout: float = 90.0) -> Sent:
    """`rate` alarm presses a second for `duration` seconds, each from a free device; waits
    for the PUBACKs (up to `ack_timeout` after the end) and keeps which presses were acked."""
    out = Sent(tag)
    futures: list[asyncio.Future[None]] = []
    t0 = time.monotonic()
    while (now := time.monotonic()) - t0 < duration:
        due = int(rate * (now - t0)) + 1
        while len(out.ids) < due:
            if not fleet.can_press("alarm.panic"):
                out.starved += 1
                break
            eid, fut = fleet.press("alarm.panic", tag)
            out.pressed_at[eid] = time.monotonic()
            fut.add_done_callback(lambda f, eid=eid: out.acked_at.__setitem__(eid, time.monotonic()))
            out.ids.append(eid)
            futures.append(fut)
        await asyncio.sleep(0.002)
    out.duration_s = time.monotonic() - t0
    deadline = time.monotonic() + ack_timeout
    results = await asyncio.gather(
        *(asyncio.wait_for(f, max(0.1, deadline - time.monotonic())) for f in futures), return_exceptions=True
    )
    for eid, r in zip(out.ids, results, strict=True):
        if isinstance(r, BaseException):
            out.errors.append(repr(r)[:200])
        else:
            out.acked.add(eid)
    return out


async def query(pool: asyncpg.Pool[Any], sql: str, *args: Any, attempts: int = 20) -> list[asyncpg.Record]:
    """A read that rides out a Postgres restart (the pool's old connections are dead)."""
    for i in range(attempts):
        try:
            return list(await pool.fetch(sql, *args))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if i == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


def _like(tag: str) -> str:
    return tag + "-%"  # tags are letters and digits only: no LIKE wildcards


async def recorded_ids(pool: asyncpg.Pool[Any], tag: str) -> Counter[str]:
    rows = await query(pool, "SELECT event_id FROM events WHERE event_id LIKE $1", _like(tag))
    return Counter(r["event_id"] for r in rows)


async def unnotified(pool: asyncpg.Pool[Any], tag: str) -> list[str]:
    """Alarm incidents opened by these presses without a notification sent to an officer
    (a member of a major incident is paged through the major incident)."""
    rows = await query(
        pool,
        "SELECT i.first_event_id FROM incidents i WHERE i.first_event_id LIKE $1 AND i.category = 'alarm' "
        "AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.incident_id = COALESCE(i.major_id, i.incident_id) "
        "AND n.status = 'sent')",
        _like(tag),
    )
    return [r["first_event_id"] for r in rows]


async def drain(pool: asyncpg.Pool[Any], sent: Sent, probe: Probe, timeout: float) -> float:
    """Seconds until every acked press is recorded, every incident notified and seen by the
    probe; -1 when that did not happen within `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        rec = await recorded_ids(pool, sent.tag)
        if sent.acked <= rec.keys() and not await unnotified(pool, sent.tag):
            opened = await query(
                pool, "SELECT first_event_id FROM incidents WHERE first_event_id LIKE $1", _like(sent.tag)
            )
            if all(r["first_event_id"] in probe.notified_ms for r in opened):
                return time.monotonic() - t0
        await asyncio.sleep(0.5)
    return -1.0


async def ledger(pool: asyncpg.Pool[Any], sent: Sent, probe: Probe) -> dict[str, Any]:
    tag = sent.tag
    rec = await recorded_ids(pool, tag)
    sent_ids = set(sent.ids)
    dup_events = sum(n - 1 for n in rec.values() if n > 1)
    incidents_per_press = await query(
        pool,
        "SELECT first_event_id, count(*) AS n FROM incidents WHERE first_event_id LIKE $1 "
        "GROUP BY first_event_id HAVING count(*) > 1",
        _like(tag),
    )
    dup_opened_db = await query(
        pool,
        "SELECT n.incident_id, n.officer_id, count(*) AS n FROM notifications n JOIN incidents i USING (incident_id) "
        "WHERE i.first_event_id LIKE $1 AND n.kind = 'incident_opened' GROUP BY 1, 2 HAVING count(*) > 1",
        _like(tag),
    )
    two_open = await query(
        pool,
        "SELECT device_id, category, count(*) AS n FROM incidents WHERE closed_at IS NULL "
        "GROUP BY 1, 2 HAVING count(*) > 1",
    )
    tag_incidents = {
        str(r["incident_id"])
        for r in await query(pool, "SELECT incident_id FROM incidents WHERE first_event_id LIKE $1", _like(tag))
    }
    # Two different notifications 'incident_opened' of one incident to one officer: a duplicate.
    # The same notification received twice: an at-least-once redelivery (the app dedups by id).
    dup_opened_seen = sum(
        len(ids) - 1 for (inc, _), ids in probe.opened.items() if inc in tag_incidents and len(ids) > 1
    )
    redelivered = sum(
        n - 1
        for nid, n in probe.by_notification.items()
        if n > 1 and any(nid in ids for (inc, _), ids in probe.opened.items() if inc in tag_incidents)
    )
    lost = sorted(sent.acked - rec.keys(), key=lambda e: sent.pressed_at[e])
    f0, f1 = sent.fault
    # When the lost presses were made and acknowledged, in seconds from the fault (and from
    # the moment the faulty part was back).
    lost_timing = {
        "pressed_s_after_fault": [round(sent.pressed_at[e] - f0, 2) for e in lost],
        "acked_s_after_back": [round(sent.acked_at[e] - f1, 2) for e in lost if e in sent.acked_at],
    }
    not_notified = await unnotified(pool, tag)
    pending = await query(
        pool,
        "SELECT (SELECT count(*) FROM notifications WHERE status <> 'sent') AS notifications, "
        "(SELECT count(*) FROM outbox WHERE published_at IS NULL) AS outbox, "
        "(SELECT count(*) FROM unprocessable_events) AS unprocessable",
    )
    delays = [probe.notified_ms[e] for e in sent.ids if e in probe.notified_ms]
    notif = summary(delays)
    duplicated = dup_events + len(incidents_per_press) + len(dup_opened_db) + len(two_open) + dup_opened_seen
    return {
        "sent": len(sent.ids),
        "acked": len(sent.acked),
        "publish_errors": len(sent.errors),
        "publish_error_samples": sent.errors[:3],
        "starved_presses": sent.starved,
        "recorded": len(rec.keys() & sent_ids),
        "recorded_not_acked": len((rec.keys() & sent_ids) - sent.acked),
        "duplicated": duplicated,
        "dup_detail": {
            "event_rows": dup_events,
            "incidents_per_press": len(incidents_per_press),
            "opened_notifications_db": len(dup_opened_db),
            "opened_notifications_received": dup_opened_seen,
            "devices_two_open_incidents": len(two_open),
        },
        "officer_redeliveries": redelivered,
        "lost": len(lost),
        "lost_samples": lost[:5],
        "lost_timing": lost_timing if lost else None,
        "not_notified": len(not_notified),
        "not_notified_samples": not_notified[:5],
        "joined_open_incident": len(rec.keys() & sent_ids) - len(tag_incidents),
        "pending_after_drain": dict(pending[0]),
        "notified_seen": notif["n"],
        "press_to_notification_ms": notif,
        "worst_delay_ms": notif["max"],
    }

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

from bench.harness import say
from bench.load import Fleet
from bench.stats import summary
from core.mqtt import MqttClient
from core.platform_mqtt import discard_session
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
        self.settings = settings
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
        # Done with it: its persistent session goes too (core.platform_mqtt.discard_session).
        await discard_session(self.settings, self.client.client_id, timeout=5)


class Resolver:
    """Officers who close every notified incident at once, so its device is free for its next
    press (alarms latch otherwise), except the incidents of devices whose id starts with
    `keep_prefix` (left open so their escalation deadlines pass). Keeps going through a
    Postgres restart. The last deadline stays on a closed incident, for the deadline ledger."""

    def __init__(self, pool: asyncpg.Pool[Any], keep_prefix: str = "") -> None:
        self.pool = pool
        self.keep_like = (keep_prefix + "%") if keep_prefix else ""
        self.task: asyncio.Task[None] | None = None
        self.errors = 0
        self.last_error = ""

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="chaos.resolver")

    async def _run(self) -> None:
        while True:
            try:
                await self.pool.execute(
                    "UPDATE incidents SET status = 'resolved', outcome = 'resolved', closed_at = clock_timestamp(), "
                    "closed_by = 'chaos', awaiting = 'none', remind_at = NULL, due_at = NULL "
                    "WHERE closed_at IS NULL AND first_notified_at IS NOT NULL "
                    "AND ($1 = '' OR device_id IS NULL OR device_id NOT LIKE $1)",
                    self.keep_like,
                    timeout=5,  # a statement on a connection a fault left hanging is given up
                )
            except Exception as exc:  # noqa: BLE001 - whatever a fault did to its pool, it goes on
                # It must outlive every fault: a resolver that stopped leaves the incidents open,
                # and the next presses of their devices join them instead of opening their own
                # (the scenarios after it would measure nothing).
                self.errors += 1
                if repr(exc) != self.last_error:
                    say(f"  resolver: {exc!r}; again in 0.5 s")
                self.last_error = repr(exc)
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
    fault_wall: tuple[float, float] = (0.0, 0.0)  # the same, as Unix time


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
        "(SELECT count(*) FROM outbox) AS outbox, "
        "(SELECT count(*) FROM unprocessable_events) AS unprocessable",
    )
    # Notifications due for half a minute and still not sent, once the backlog drained: a
    # notifier that stopped delivering (a press then joins the open incident of its device
    # instead of opening one, and nothing else shows it).
    stuck = await query(
        pool,
        "SELECT count(*) AS n FROM notifications WHERE status = 'pending' "
        "AND next_attempt_at < clock_timestamp() - interval '30 seconds'",
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
        "notifications_stuck": stuck[0]["n"],
        "notified_seen": notif["n"],
        "press_to_notification_ms": notif,
        "worst_delay_ms": notif["max"],
    }


async def close_kept(pool: asyncpg.Pool[Any], keep_prefix: str) -> int:
    """Close the incidents the resolver left open (the last deadline stays on them)."""
    rows = await query(
        pool,
        "UPDATE incidents SET status = 'resolved', outcome = 'resolved', closed_at = clock_timestamp(), "
        "closed_by = 'chaos', awaiting = 'none', remind_at = NULL, due_at = NULL "
        "WHERE closed_at IS NULL AND device_id LIKE $1 RETURNING incident_id",
        keep_prefix + "%",
    )
    return len(rows)


async def deadline_ledger(
    pool: asyncpg.Pool[Any], tags: list[str], fault_wall: tuple[float, float], slack_s: float
) -> dict[str, Any]:
    """Every escalation deadline (and reminder) of the incidents opened by these presses: how
    late the timer acted on it, from the timeline (each escalation records the deadline it
    acted on), and the deadlines that passed and were never acted on.

    A deadline may fire late by at most `slack_s`, plus, when it passed during the fault
    (between `fault_wall`), the rest of the fault: at most the fault's length plus the slack.
    A deadline still pending on an incident (the current one of an open incident, the last
    one of a closed incident) that passed longer ago than that before the incident closed, or
    before now, was missed."""
    likes = [_like(t) for t in tags]
    f0, f1 = fault_wall

    def allowed(due: float) -> float:
        return slack_s + (max(0.0, f1 - max(due, f0)) if due <= f1 else 0.0)

    fired = await query(
        pool,
        "SELECT t.kind, extract(epoch FROM t.at)::float8 AS at, "
        "extract(epoch FROM (t.detail->>'due_at')::timestamptz)::float8 AS due "
        "FROM incident_timeline t JOIN incidents i USING (incident_id) "
        "WHERE i.first_event_id LIKE ANY($1::text[]) AND t.kind IN ('escalated', 'repaged', 'reminded') "
        "AND t.detail->>'due_at' IS NOT NULL",
        likes,
    )
    pending = await query(
        pool,
        "SELECT extract(epoch FROM i.deadline_at)::float8 AS due, "
        "extract(epoch FROM COALESCE(i.closed_at, clock_timestamp()))::float8 AS until "
        "FROM incidents i WHERE i.first_event_id LIKE ANY($1::text[]) AND i.deadline_at IS NOT NULL",
        likes,
    )
    lateness = [(r["at"] - r["due"], r["due"]) for r in fired]
    during = [late for late, due in lateness if f0 <= due <= f1]
    too_late = [round(late, 2) for late, due in lateness if late > allowed(due)]
    missed = [round(r["until"] - r["due"], 2) for r in pending if r["until"] - r["due"] > allowed(r["due"])]
    return {
        "deadlines_fired": len(lateness),
        "deadlines_in_fault": len(during),
        "worst_lateness_s": round(max((late for late, _ in lateness), default=0.0), 2),
        "worst_lateness_in_fault_s": round(max(during, default=0.0), 2),
        "deadlines_too_late": len(too_late),
        "too_late_samples_s": sorted(too_late, reverse=True)[:5],
        "deadlines_missed": len(missed),
        "missed_overdue_samples_s": sorted(missed, reverse=True)[:5],
    }

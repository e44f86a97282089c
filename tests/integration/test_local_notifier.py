"""A worker hands the notifications it queued to a notifier in its own process, with no
NOTIFY through Postgres; when that hand-over never happens (the process died after its
commit), the notifier component still delivers them, by its poll."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import msgspec
import orjson
import pytest

from dispatch.components import build
from schemas import topics
from schemas.messages import IncidentUpdate, OfficerNotification
from tests.support.mqtt_clients import device_client, event_payload, platform_client
from tests.support.pipeline import Pipeline
from tests.support.waiting import wait_until
from workers.escalation_worker import EscalationWorker
from workers.incident_store import HandedNotification
from workers.notifier import PAGE_ROWS, Notifier, page_of

pytestmark = pytest.mark.stack

GRID = "990102001001001"
GRID_OFFICER = f"go-{GRID}"


def test_a_worker_process_always_has_a_notifier_beside_it(env) -> None:  # type: ignore[no-untyped-def]
    alone = build(("worker",), env.settings, env.pool)
    local = [c for c in alone if isinstance(c, Notifier)]
    assert [n.role for n in local] == ["worker-notifier"]  # its own MQTT client id
    worker = next(c for c in alone if isinstance(c, EscalationWorker))
    assert worker._local_notifier is local[0] and worker.batch.handover_lease is not None

    together = build(("worker", "notifier"), env.settings, env.pool)
    notifiers = [c for c in together if isinstance(c, Notifier)]
    assert [n.role for n in notifiers] == ["notifier"]  # the component itself, not a second one
    assert next(c for c in together if isinstance(c, EscalationWorker))._local_notifier is notifiers[0]


async def _listening(env: Any, got: list[str]) -> asyncpg.Connection[Any]:
    conn = await asyncpg.connect(env.settings.database_url)
    await conn.add_listener("pingan_notifications", lambda *a: got.append(a[-1]))
    return conn


@contextlib.asynccontextmanager
async def pressed(env: Any) -> AsyncIterator[tuple[dict[str, Any], Any]]:
    """A new panic button pressed once, and the officer app of its grid cell listening:
    yields the press and the officer's client."""
    dev = await env.add_device(GRID, "panic_button")
    device = await device_client(env.settings, dev.device_id, dev.password)
    officer = await platform_client(env.settings, topics.officer_notifications(GRID_OFFICER))
    try:
        body = event_payload(dev.device_id)
        await device.client.publish(topics.device_events(dev.device_id), orjson.dumps(body), qos=1)
        yield body, officer
    finally:
        await device.close()
        await officer.close()


async def test_the_officer_is_paged_without_a_notify_through_postgres(env) -> None:  # type: ignore[no-untyped-def]
    # Polls 30 s apart and no NOTIFY: a page within 5 s can only come from the worker's kick.
    pipeline = Pipeline(env.settings.replace(poll_interval_s=30.0), env.pool, names=("gateway", "worker"))
    await pipeline.start()
    notifies: list[str] = []
    listener = await _listening(env, notifies)
    try:
        async with pressed(env) as (body, officer):
            _, note = await officer.wait_for(lambda n: n["event_id"] == body["event_id"], timeout=5)
            assert note["kind"] == "incident_opened"

            async def sent() -> bool:
                status = await env.pool.fetchval(
                    "SELECT n.status FROM notifications n JOIN incidents i ON i.incident_id = n.incident_id "
                    "WHERE i.first_event_id = $1 AND n.officer_id = $2",
                    body["event_id"],
                    GRID_OFFICER,
                )
                return bool(status == "sent")

            await wait_until(sent)  # recorded once the broker acknowledged the page
            assert notifies == []  # the page went out with no NOTIFY on the notifiers' channel

            # Recorded on the incident, with its update for the live queue: the IncidentUpdate
            # the relay publishes, written by the record's SQL.
            incident = await env.pool.fetchrow(
                "SELECT i.*, n.sent_at FROM incidents i JOIN notifications n ON n.incident_id = i.incident_id "
                "WHERE i.first_event_id = $1",
                body["event_id"],
            )
            assert incident["status"] == "notified" and incident["first_notified_at"] == incident["sent_at"]
            kinds = await env.pool.fetch(
                "SELECT kind, detail FROM incident_timeline WHERE incident_id = $1 ORDER BY id", incident["incident_id"]
            )
            assert kinds[-1]["kind"] == "notifications_sent"
            assert kinds[-1]["detail"] == {"officers": [GRID_OFFICER], "channel": "mqtt"}
            payload = await env.pool.fetchval(
                "SELECT payload FROM outbox WHERE key = $1 ORDER BY id DESC LIMIT 1", str(incident["incident_id"])
            )
            update = msgspec.json.decode(payload, type=IncidentUpdate)
            assert update == IncidentUpdate(
                incident_id=str(incident["incident_id"]),
                case_number=incident["case_number"],
                change="notified",
                status="notified",
                priority=incident["priority"],
                level=incident["level"],
                device_id=incident["device_id"],
                grid_code=incident["grid_code"],
                at=incident["sent_at"],
                version=incident["version"],
            )
            assert orjson.loads(payload)["at"] == msgspec.json.encode(incident["sent_at"]).decode().strip('"')
    finally:
        await listener.close()
        await pipeline.stop()


async def test_notifications_a_worker_never_handed_over_are_delivered_by_the_notifier_after_the_lease(env) -> None:  # type: ignore[no-untyped-def]
    lease = 2.0
    settings = env.settings.replace(poll_interval_s=0.2, notifier_handover_lease_s=lease)
    pipeline = Pipeline(settings, env.pool, names=("gateway",))
    worker = EscalationWorker(settings, env.pool)
    gone = Notifier(settings, env.pool, role="worker-notifier")  # never started: the process "died"
    worker.deliver_with(gone)
    pipeline.components.append(worker)
    await pipeline.start()
    notifier = Notifier(settings, env.pool)  # the notifier component, polling 5 times a second
    task = asyncio.create_task(notifier.run())
    try:
        async with pressed(env) as (body, officer):
            _, note = await officer.wait_for(lambda n: n["event_id"] == body["event_id"], timeout=lease + 5)
            assert note["kind"] == "incident_opened"
            assert gone._handed  # handed over to a notifier that never ran

            async def recorded() -> Any:
                return await env.pool.fetchrow(
                    "SELECT created_at, sent_at FROM notifications WHERE id = $1 AND status = 'sent'",
                    note["notification_id"],
                )

            row = await wait_until(recorded)  # recorded once the broker acknowledged the page
            # The component left the leased row alone until the lease ran out, then paged.
            assert (row["sent_at"] - row["created_at"]).total_seconds() >= lease - 0.05
    finally:
        notifier.request_stop()
        await task
        await pipeline.stop()


async def test_a_handed_page_is_the_page_a_claim_makes_of_the_row(env) -> None:  # type: ignore[no-untyped-def]
    pipeline = Pipeline(env.settings.replace(poll_interval_s=30.0), env.pool, names=("gateway",))
    worker = EscalationWorker(env.settings, env.pool)
    held = Notifier(env.settings, env.pool, role="worker-notifier")  # not started: keeps what it is handed
    worker.deliver_with(held)
    pipeline.components.append(worker)
    await pipeline.start()
    try:
        dev = await env.add_device(GRID, "panic_button")
        await env.pool.execute(
            "UPDATE devices SET resident_note = '独居老人' , address = '幸福小区 3 号楼' WHERE device_id = $1",
            dev.device_id,
        )
        device = await device_client(env.settings, dev.device_id, dev.password)
        try:
            # A device clock in UTC+8: the page gives the time as the claim reads it back (UTC).
            body = event_payload(dev.device_id, occurred_at=datetime.now(timezone(timedelta(hours=8))).isoformat())
            await device.client.publish(topics.device_events(dev.device_id), orjson.dumps(body), qos=1)

            async def handed_over() -> bool:
                return any(h.page.event_id == body["event_id"] for _, h in held._handed)

            await wait_until(handed_over)
        finally:
            await device.close()
        handed = [h for _, h in held._handed if h.page.event_id == body["event_id"]]
        rows = await env.pool.fetch(PAGE_ROWS + " WHERE n.id = ANY($1::bigint[]) ORDER BY n.id", [h.id for h in handed])
        # As the officer app reads them (times as written on the wire, e.g. in UTC or not).
        claimed = [msgspec.to_builtins(msgspec.structs.asdict(page_of(r))) for r in rows]
        given = [msgspec.to_builtins(msgspec.structs.asdict(h.page)) for h in handed]
        assert len(claimed) == len(given) == 1
        assert {k: (v, given[0][k]) for k, v in claimed[0].items() if given[0][k] != v} == {}
        assert handed[0].page.resident_note == "独居老人"
    finally:
        await pipeline.stop()


def _handed(notification_id: int, event_id: str) -> HandedNotification:
    """A handed page of a notification row that is not there (recording it changes nothing)."""
    page = OfficerNotification(
        notification_id=notification_id,
        officer_id=GRID_OFFICER,
        incident_id=f"00000000-0000-0000-0000-{-notification_id:012d}",
        case_number="990102-20261127-000001",
        event_id=event_id,
        kind="incident_opened",
        reason="test",
        priority=1,
        event_type="alarm.panic",
        grid_code=GRID,
        pressed_at=datetime.now(UTC),
        created_at=datetime.now(UTC),
        level="grid",
    )
    return HandedNotification(notification_id, page.incident_id, page)


async def test_handed_pages_whose_lease_ran_out_are_left_to_the_claims(env) -> None:  # type: ignore[no-untyped-def]
    notifier = Notifier(env.settings.replace(notifier_handover_lease_s=0.05), env.pool, role="worker-notifier")
    notifier.hand_over([_handed(-1, "e-late")])
    await asyncio.sleep(0.1)  # the notifier was busy: the lease ran out meanwhile
    assert notifier._take_handed(200) == []  # nothing to publish
    assert not notifier._handed
    assert notifier.counters.snapshot()["handover_expired"] == 1


async def test_handed_pages_go_out_while_the_ones_before_are_being_recorded(env) -> None:  # type: ignore[no-untyped-def]
    # One page per chunk, and the record of the first held back: the next pages are published
    # all the same, and the ones that waited are recorded together once it is done.
    notifier = Notifier(
        env.settings.replace(notifier_batch_max=1, poll_interval_s=30.0), env.pool, role="worker-notifier"
    )
    recording: list[list[str]] = []
    release = asyncio.Event()
    settle = notifier._settle

    async def held(conn: Any, rows: Any, pages: list[OfficerNotification], results: Any) -> None:
        ours = [p.event_id for p in pages if p.event_id.startswith("e-window-")]
        if ours:  # (a claim at start may record rows other tests left pending)
            recording.append(ours)
            await release.wait()
        await settle(conn, rows, pages, results)

    notifier._settle = held  # type: ignore[method-assign]
    officer = await platform_client(env.settings, topics.officer_notifications(GRID_OFFICER))
    task = asyncio.create_task(notifier.run())
    try:
        await asyncio.wait_for(notifier.ready.wait(), 10)
        notifier.hand_over([_handed(-11, "e-window-1")])
        await wait_until(lambda: asyncio.sleep(0, recording == [["e-window-1"]]))
        notifier.hand_over([_handed(-12, "e-window-2"), _handed(-13, "e-window-3")])
        for event_id in ("e-window-2", "e-window-3"):
            await officer.wait_for(lambda n, e=event_id: n["event_id"] == e, timeout=5)  # type: ignore[misc]
        assert recording == [["e-window-1"]]  # the first still being recorded
        release.set()
        await wait_until(lambda: asyncio.sleep(0, len(recording) == 2))
        assert recording == [["e-window-1"], ["e-window-2", "e-window-3"]]
    finally:
        release.set()
        notifier.request_stop()
        await asyncio.wait_for(task, 15)
        await officer.close()


async def test_a_stopping_notifier_records_the_pages_it_published(env) -> None:  # type: ignore[no-untyped-def]
    notifier = Notifier(env.settings.replace(poll_interval_s=30.0), env.pool, role="worker-notifier")
    recorded: list[str] = []
    release = asyncio.Event()
    settle = notifier._settle

    async def held(conn: Any, rows: Any, pages: list[OfficerNotification], results: Any) -> None:
        ours = [p.event_id for p in pages if p.event_id.startswith("e-stop-")]
        if ours:
            await release.wait()
            recorded.extend(e for e, r in zip(ours, results, strict=True) if not isinstance(r, BaseException))
        await settle(conn, rows, pages, results)

    notifier._settle = held  # type: ignore[method-assign]
    task = asyncio.create_task(notifier.run())
    await asyncio.wait_for(notifier.ready.wait(), 10)
    notifier.hand_over([_handed(-21, "e-stop-1"), _handed(-22, "e-stop-2")])
    await wait_until(lambda: asyncio.sleep(0, not notifier._handed))
    notifier.request_stop()
    await asyncio.sleep(0.2)
    assert not task.done()  # the record of what went out is not dropped at the stop
    release.set()
    await asyncio.wait_for(task, 15)
    assert recorded == ["e-stop-1", "e-stop-2"]  # both acknowledged by the broker and recorded


async def test_a_hand_over_pages_the_officer_without_a_claim(env) -> None:  # type: ignore[no-untyped-def]
    # Polls 30 s apart: after its first claim at start, the notifier claims only when asked.
    # (No correlation: the module's presses in one grid cell would otherwise form a major
    # incident, whose members page nobody at the grid.)
    settings = env.settings.replace(poll_interval_s=30.0, correlation_threshold=10**9)
    pipeline = Pipeline(settings, env.pool, names=("gateway", "worker"))
    notifier = next(c for c in pipeline.components if isinstance(c, Notifier))
    claims = 0
    claim = notifier._deliver_batch

    async def counted(mqtt: Any) -> bool:
        nonlocal claims
        claims += 1
        return await claim(mqtt)

    notifier._deliver_batch = counted  # type: ignore[method-assign]
    await pipeline.start()
    try:
        await wait_until(lambda: asyncio.sleep(0, claims >= 1))  # the claim at start
        at_start = claims
        for _ in range(3):
            async with pressed(env) as (body, officer):
                _, note = await officer.wait_for(lambda n: n["event_id"] == body["event_id"], timeout=5)
                assert note["kind"] == "incident_opened"
        assert claims == at_start  # three pages, no claim for any of them
    finally:
        await pipeline.stop()

"""A worker hands the notifications it queued to a notifier in its own process, with no
NOTIFY through Postgres; when that hand-over never happens (the process died after its
commit), the notifier component still delivers them, by its poll."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest

from dispatch.components import build
from schemas import topics
from tests.support.mqtt_clients import device_client, event_payload, platform_client
from tests.support.pipeline import Pipeline
from tests.support.waiting import wait_until
from workers.escalation_worker import EscalationWorker
from workers.notifier import Notifier

pytestmark = pytest.mark.stack

GRID = "990102001001001"
GRID_OFFICER = f"go-{GRID}"


def test_a_worker_process_always_has_a_notifier_beside_it(env) -> None:  # type: ignore[no-untyped-def]
    alone = build(("worker",), env.settings, env.pool)
    local = [c for c in alone if isinstance(c, Notifier)]
    assert [n.role for n in local] == ["worker-notifier"]  # its own MQTT client id
    worker = next(c for c in alone if isinstance(c, EscalationWorker))
    assert worker._local_notifier is local[0] and not worker.batch.notify_notifiers

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
    finally:
        await listener.close()
        await pipeline.stop()


async def test_notifications_a_worker_never_handed_over_are_delivered_by_the_notifier(env) -> None:  # type: ignore[no-untyped-def]
    settings = env.settings.replace(poll_interval_s=0.5)
    pipeline = Pipeline(settings, env.pool, names=("gateway",))
    worker = EscalationWorker(settings, env.pool)
    gone = Notifier(settings, env.pool, role="worker-notifier")  # never started: the process "died"
    worker.deliver_with(gone)
    pipeline.components.append(worker)
    await pipeline.start()
    try:
        async with pressed(env) as (body, officer):

            async def queued() -> int:
                return int(
                    await env.pool.fetchval(
                        "SELECT count(*) FROM notifications n JOIN incidents i ON i.incident_id = n.incident_id "
                        "WHERE i.first_event_id = $1 AND n.status = 'pending'",
                        body["event_id"],
                    )
                )

            await wait_until(queued)
            await asyncio.sleep(1.0)
            assert await queued() > 0  # nobody delivers them: the hand-over went nowhere

            notifier = Notifier(settings, env.pool)  # the notifier component, started afterwards
            task = asyncio.create_task(notifier.run())
            try:
                _, note = await officer.wait_for(lambda n: n["event_id"] == body["event_id"], timeout=5)
                assert note["kind"] == "incident_opened"
            finally:
                notifier.request_stop()
                await task
    finally:
        await pipeline.stop()

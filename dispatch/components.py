"""Builds the components a `dispatch` command runs, and runs them under one supervisor."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import asyncpg
import structlog

from core import db, kafka
from core.lifecycle import Component, install_signal_handlers, supervise
from core.settings import Settings
from dispatch.api.app import ApiServer
from gateways.http_ingest import HttpIngest
from gateways.mqtt_gateway import MqttGateway
from gateways.officer_actions_gateway import OfficerActionsGateway
from workers.escalation_timer import EscalationTimer
from workers.escalation_worker import EscalationWorker
from workers.notifier import Notifier
from workers.outbox_relay import OutboxRelay
from workers.rejection_recorder import RejectionRecorder

log = structlog.get_logger(__name__)

# The collector looks at young objects every 700 allocations by default: at thousands of
# messages a second, every few milliseconds, so that each message's objects (held until Kafka
# or the broker acknowledges it) were still alive at several collections, and were moved to the
# old generation, whose full collections then walked them all. At 16,000 heartbeats/s that was
# a quarter of the gateway's time (py-spy --native, gc_collect_main). Every 20,000: most of a
# message's objects are freed before a collection sees them. The older generations keep their
# ratios (one collection of each per ten of the one below).
YOUNG_COLLECTION_EVERY = (20_000, 10, 10)

COMPONENTS = {
    "gateway": (MqttGateway,),
    "worker": (EscalationWorker, RejectionRecorder),
    "notifier": (Notifier,),
    "relay": (OutboxRelay,),
    "timer": (EscalationTimer,),
    "api": (ApiServer,),
    "officer-actions": (OfficerActionsGateway,),
    "ingest": (HttpIngest,),
}
ALL = ("gateway", "ingest", "worker", "notifier", "relay", "timer", "officer-actions", "api")
# The notifier and the escalation timer talk to Postgres and MQTT only: they start, and keep
# escalating, while Kafka is away.
WITHOUT_KAFKA = frozenset({"notifier", "timer"})


def build(names: tuple[str, ...], settings: Settings, pool: asyncpg.Pool[Any]) -> list[Component]:
    out: list[Component] = []
    for name in names:
        for cls in COMPONENTS[name]:
            out.append(cls(settings, pool))
    wire_local_notifier(out, settings, pool)
    return out


def wire_local_notifier(comps: list[Component], settings: Settings, pool: asyncpg.Pool[Any]) -> None:
    """A worker hands the notifications it queued to a notifier in its own process: the
    notifier component when it runs here too, else one of its own ("worker-notifier")."""
    workers = [c for c in comps if isinstance(c, EscalationWorker)]
    if not workers:
        return
    notifier = next((c for c in comps if isinstance(c, Notifier)), None)
    if notifier is None:
        notifier = Notifier(settings, pool, role="worker-notifier")
        comps.append(notifier)
    for w in workers:
        w.deliver_with(notifier)


async def check_schema(pool: asyncpg.Pool[Any]) -> None:
    applied = (
        {r["version"] for r in await pool.fetch("SELECT version FROM schema_migrations")}
        if await pool.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        else set()
    )
    missing = [name for v, name, _ in db.migrations() if v not in applied]
    if missing:
        raise SystemExit(f"database is not migrated (missing {', '.join(missing)}): run `dispatch migrate`")


async def run_components(
    names: tuple[str, ...],
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    extra: list[Component] | None = None,
) -> None:
    stop = stop or asyncio.Event()
    install_signal_handlers(stop)
    pool = await db.create_pool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        connect_timeout=settings.db_connect_timeout_s,
        command_timeout=settings.db_command_timeout_s,
        generic_plans="api" not in names,  # the desk API's searches are planned for their values
    )
    try:
        await check_schema(pool)
        if not set(names) <= WITHOUT_KAFKA:
            await kafka.ensure_topics(settings)
        comps = build(names, settings, pool) + (extra or [])
        log.info("starting", components=[c.name for c in comps], instance=settings.instance_id)
        # What is loaded by now (modules, settings, the pool) lives as long as the process: out
        # of the collector's way, so that a full collection does not walk it again each time.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*YOUNG_COLLECTION_EVERY)
        await supervise(comps, stop=stop)
    finally:
        await pool.close()

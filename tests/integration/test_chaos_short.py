"""The short chaos run (chaos/run.py) on the test stack: the gateway SIGKILLed mid-stream and
restarted with the same instance id; Mosquitto restarted under load; the network to Postgres
blackholed for 5 s (the components reach it through the suite's TCP proxy). Every press the
broker acknowledged is recorded exactly once and notified; no press opens two incidents or
pages an officer twice; every escalation deadline that passed fired, late by at most the
fault plus a few seconds."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from chaos.faults import stack_up
from chaos.run import SCENARIOS, Pace, Rig, add_devices, chaos_settings, device_ids, kept_ids, short_policy, table
from chaos.tcp_proxy import TcpProxy
from core import kafka
from core.settings import Settings
from tests.support import environment

pytestmark = pytest.mark.stack

PACE = Pace(rate=20.0, duration_s=10.0, fault_at_s=3.0, down_s=2.0, cut_s=5.0, drain_s=45.0)
N_DEVICES = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def run_one(stack_env: dict[str, str], base_settings: Settings, name: str, log_dir: Path) -> dict[str, Any]:
    """A fresh database, the components as child processes (stable instance id), the fleet and
    the kept devices (short escalation policy); one scenario; every service of the test stack
    up again afterwards. For a cut, the components reach Postgres through a TCP proxy."""
    env = await environment.TestEnvironment.create(base_settings)
    rig: Rig | None = None
    (sc,) = [s for s in SCENARIOS if s.name == name]
    proxies: dict[str, TcpProxy] = {}
    if sc.action == "cut":
        assert sc.target == "postgres", "the test stack's Kafka has no proxied listener"
        pg_port = urlsplit(env.settings.database_url).port or 5432
        proxies["postgres"] = TcpProxy(free_port(), "127.0.0.1", pg_port, name="pg")
    try:
        settings = chaos_settings(env.settings, f"chaos-{env.db_name.removeprefix('pingan_test_')}")
        ids = device_ids(N_DEVICES)
        async with env.pool.acquire() as conn:
            await add_devices(conn, settings, ids + kept_ids(), "chaos-device-password")
            await short_policy(conn)
        await env.broker_knows(ids[0], "chaos-device-password")
        await kafka.ensure_topics(settings)
        for p in proxies.values():
            await p.start()
        rig = Rig(stack_env, settings, ids, log_dir, proxies=proxies, kept=kept_ids())
        await rig.start()
        try:
            result = await rig.run(sc, PACE, f"{sc.name.replace('-', '')}xtest")
        finally:
            stack_up(stack_env)  # later modules expect every service up
        print(table([result]))
        return result
    finally:
        if rig is not None:
            await rig.stop()
        for p in proxies.values():
            await p.stop()
        await env.close()


def check(r: dict[str, Any]) -> None:
    assert r["acked"] >= 0.5 * PACE.rate * PACE.duration_s, r  # the load really ran
    assert r["lost"] == 0, f"{r['lost']} acknowledged presses never recorded: {r}"
    assert r["duplicated"] == 0, r
    assert r["not_notified"] == 0, r
    assert r["kept_lost"] == 0, r
    assert r["deadlines_fired"] > 0, r  # the kept alarms' deadlines really passed
    assert r["deadlines_missed"] == 0 and r["deadlines_too_late"] == 0, r


async def test_gateway_sigkill_loses_and_duplicates_nothing(stack_env, base_settings, tmp_path) -> None:
    check(await run_one(stack_env, base_settings, "kill-gateway", tmp_path))


async def test_mosquitto_restart_loses_and_duplicates_nothing(stack_env, base_settings, tmp_path) -> None:
    check(await run_one(stack_env, base_settings, "restart-mosquitto", tmp_path))


async def test_postgres_blackhole_loses_nothing_and_keeps_deadlines(stack_env, base_settings, tmp_path) -> None:
    r = await run_one(stack_env, base_settings, "cut-postgres-blackhole", tmp_path)
    check(r)
    assert r["deadlines_in_fault"] > 0, r  # a deadline passed while Postgres was out of reach
    assert r["components_exited"] == [], r

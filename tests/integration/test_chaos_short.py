"""The short chaos run (chaos/run.py) on the test stack: the gateway SIGKILLed mid-stream and
restarted with the same instance id; Mosquitto restarted under load. Every press the broker
acknowledged is recorded exactly once and notified; no press opens two incidents or pages an
officer twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chaos.faults import stack_up
from chaos.run import SCENARIOS, Pace, Rig, add_devices, chaos_settings, device_ids, table
from core import kafka
from core.settings import Settings
from tests.support import environment

pytestmark = pytest.mark.stack

PACE = Pace(rate=20.0, duration_s=10.0, fault_at_s=3.0, down_s=2.0, drain_s=45.0)
N_DEVICES = 120


async def run_one(stack_env: dict[str, str], base_settings: Settings, target: str, log_dir: Path) -> dict[str, Any]:
    """A fresh database, the components as child processes (stable instance id), the fleet;
    one scenario; every service of the test stack up again afterwards."""
    env = await environment.TestEnvironment.create(base_settings)
    rig: Rig | None = None
    try:
        settings = chaos_settings(env.settings, f"chaos-{env.db_name.removeprefix('pingan_test_')}")
        ids = device_ids(N_DEVICES)
        async with env.pool.acquire() as conn:
            await add_devices(conn, settings, ids, "chaos-device-password")
        await kafka.ensure_topics(settings)
        rig = Rig(stack_env, settings, ids, log_dir)
        await rig.start()
        (sc,) = [s for s in SCENARIOS if s.target == target]
        try:
            result = await rig.run(sc, PACE, f"{sc.name.replace('-', '')}xtest")
        finally:
            stack_up(stack_env)  # later modules expect every service up
        print(table([result]))
        return result
    finally:
        if rig is not None:
            await rig.stop()
        await env.close()


def check(r: dict[str, Any]) -> None:
    assert r["acked"] >= 0.5 * PACE.rate * PACE.duration_s, r  # the load really ran
    assert r["lost"] == 0, f"{r['lost']} acknowledged presses never recorded: {r}"
    assert r["duplicated"] == 0, r
    assert r["not_notified"] == 0, r


async def test_gateway_sigkill_loses_and_duplicates_nothing(stack_env, base_settings, tmp_path) -> None:
    check(await run_one(stack_env, base_settings, "gateway", tmp_path))


async def test_mosquitto_restart_loses_and_duplicates_nothing(stack_env, base_settings, tmp_path) -> None:
    check(await run_one(stack_env, base_settings, "mosquitto", tmp_path))

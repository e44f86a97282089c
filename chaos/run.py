"""Fault injection on the whole alarm path: `make chaos` (python -m chaos.run [--short]).

On a stack of its own (.stack-chaos, other ports) and a fresh database, the components run as
child processes while ~200 simulated devices press alarm buttons at ~20/s. One fault at a
time, mid-stream: a component SIGKILLed and restarted with the same instance id, or Mosquitto,
Kafka or Postgres stopped and started again. After each, the backlog drains and a ledger is
drawn from the generator's records, the officer probe and Postgres: sent, acknowledged to the
device, recorded, duplicated, lost, not notified, worst press-to-notification delay. A table
on the terminal, JSON under artifacts/chaos/; the exit code is non-zero when any scenario
lost, duplicated or left an alarm without a notification.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench import harness
from bench.harness import say
from bench.load import Fleet
from bench.procs import REPO
from chaos.faults import ChaosComponents, restart_service, stack_up
from chaos.ledger import Probe, Resolver, drain, drive, ledger, recorded_ids, unnotified
from core import db, kafka
from core.logging import configure
from core.mosquitto_passwords import hash_password
from core.settings import Settings
from dispatch.credentials import sync_broker_credentials
from dispatch.demo_city import seed, units

CHAOS_STACK = {
    "PINGAN_STACK_DIR": str(REPO / ".stack-chaos"),
    "PINGAN_PG_PORT": "55435",
    "PINGAN_MQTT_PORT": "18833",
    "PINGAN_KAFKA_PORT": "19098",
    "PINGAN_KAFKA_CONTROLLER_PORT": "19099",
}
COMPONENTS = ["gateway", "worker", "notifier", "relay", "timer"]
SERVICES = ["mosquitto", "kafka", "postgres"]
DEVICE_PASSWORD = "chaos-device-password"


@dataclass(frozen=True)
class Scenario:
    name: str
    target: str  # a component or a service

    @property
    def is_service(self) -> bool:
        return self.target in SERVICES


SCENARIOS = [Scenario(f"kill-{c}", c) for c in COMPONENTS] + [Scenario(f"restart-{s}", s) for s in SERVICES]


@dataclass(frozen=True)
class Pace:
    rate: float = 20.0
    duration_s: float = 25.0
    fault_at_s: float = 8.0
    down_s: float = 2.0
    drain_s: float = 60.0


FULL = Pace()
SHORT = Pace(duration_s=10.0, fault_at_s=3.0)


def stack_env(stack: dict[str, str]) -> dict[str, str]:
    return harness.stack_env(stack)


def device_ids(n: int) -> list[str]:
    return [f"cx{i:05d}" for i in range(n)]


async def add_devices(conn: asyncpg.Connection[Any], settings: Settings, ids: list[str], password: str) -> None:
    """Panic buttons spread over the demo city's grid cells, one known password, broker accounts."""
    grids = [u.code for u in units() if u.level == "grid"]
    encoded = hash_password(password)
    await conn.executemany(
        "INSERT INTO devices (device_id, grid_code, kind, address, mqtt_password_hash) VALUES ($1, $2, $3, $4, $5)",
        [(d, grids[i % len(grids)], "panic_button", f"chaos {i}", encoded) for i, d in enumerate(ids)],
    )
    await sync_broker_credentials(conn, settings)


def chaos_settings(settings: Settings, instance_id: str) -> Settings:
    return settings.replace(
        instance_id=instance_id,  # stable: a restarted gateway gets its MQTT session back
        correlation_threshold=10**9,  # every press opens an incident of its own
        log_level="info",
        http_port=0,
        ingest_port=0,
    )


async def prepare(base: Settings, n_devices: int, tag: str) -> Settings:
    """A fresh database (older chaos databases dropped), migrated, the demo city, the devices."""
    dsn = await harness.fresh_database(base.database_url, "pingan_chaos", tag)
    settings = chaos_settings(
        base.replace(
            database_url=dsn,
            kafka_topic_prefix=f"pingan-chaos-{tag}",
            kafka_consumer_group=f"pingan-chaos-{tag}",
        ),
        f"chaos-{tag}",
    )
    conn = await db.connect(settings.database_url)
    try:
        await db.migrate(conn)
        await seed(conn, settings)
        await add_devices(conn, settings, device_ids(n_devices), DEVICE_PASSWORD)
    finally:
        await conn.close()
    await kafka.ensure_topics(settings)
    await asyncio.sleep(1.0)  # the broker reloads its password file
    return settings


class Rig:
    """The components as child processes, the device fleet, the officer probe, the resolver."""

    def __init__(self, stack: dict[str, str], settings: Settings, devices: list[str], log_dir: Path) -> None:
        self.stack = stack  # the stack's env (for deploy/stack.sh)
        self.settings = settings
        child_env = dict(stack)
        child_env.update(settings.to_env())
        self.comps = ChaosComponents(child_env, COMPONENTS, log_dir)
        self.devices = devices
        self.fleet = Fleet(settings, devices, DEVICE_PASSWORD)
        self.probe = Probe(settings, self.fleet)
        self.pool: asyncpg.Pool[Any] | None = None
        self.resolver: Resolver | None = None

    async def start(self) -> None:
        await kafka.ensure_topics(self.settings)
        self.comps.start()
        await self.comps.wait_logged("gateway", "gateway ready")
        await self.comps.wait_logged("worker", "worker ready")
        self.pool = await db.create_pool(self.settings.database_url, min_size=1, max_size=4)
        await self.fleet.connect()
        if len(self.fleet.clients) != len(self.devices):
            raise RuntimeError(f"only {len(self.fleet.clients)} of {len(self.devices)} devices connected")
        await self.probe.start()
        self.resolver = Resolver(self.pool)
        self.resolver.start()

    async def stop(self) -> None:
        if self.resolver:
            await self.resolver.stop()
        await self.probe.stop()
        await self.fleet.close()
        self.comps.stop()
        if self.pool:
            await self.pool.close()

    async def run(self, sc: Scenario, pace: Pace, tag: str) -> dict[str, Any]:
        assert self.pool is not None
        for name, up in self.comps.alive().items():  # a component that died by itself comes back
            if not up:
                self.comps.spawn(name)
        task = asyncio.create_task(drive(self.fleet, rate=pace.rate, duration=pace.duration_s, tag=tag))
        await asyncio.sleep(pace.fault_at_s)
        t0 = time.monotonic()
        if sc.is_service:
            await restart_service(self.stack, sc.target, pace.down_s)
        else:
            self.comps.kill(sc.target)
            await asyncio.sleep(pace.down_s)
            self.comps.spawn(sc.target)
        t1 = time.monotonic()
        outage = t1 - t0
        sent = await task
        sent.fault = (t0, t1)
        drained = await drain(self.pool, sent, self.probe, pace.drain_s)
        out: dict[str, Any] = {"scenario": sc.name, "target": sc.target, "tag": tag}
        # A component that exited by itself during the fault (no supervisor restarts it here):
        # what was still missing then, then the component started again (same instance id)
        # and a second drain, so "lost" counts only what no restart brings back.
        exited = [n for n, up in self.comps.alive().items() if not up]
        out["components_exited"] = exited
        if exited:
            missing = len(sent.acked - (await recorded_ids(self.pool, tag)).keys())
            out["not_recorded_while_exited"] = missing
            out["not_notified_while_exited"] = len(await unnotified(self.pool, tag))
            for name in exited:
                self.comps.spawn(name)
            if "gateway" in exited:
                await self.comps.wait_logged("gateway", "gateway ready")
            drained = await drain(self.pool, sent, self.probe, pace.drain_s)
        out.update(await ledger(self.pool, sent, self.probe))
        out["fault_outage_s"] = round(outage, 1)
        out["load_s"] = round(sent.duration_s, 1)
        out["drain_s"] = round(drained, 1)
        out["components_alive"] = self.comps.alive()
        out["resolver_errors"] = self.resolver.errors if self.resolver else 0
        return out


def bad(r: dict[str, Any]) -> bool:
    """Lost, duplicated, an alarm never notified, or a component that died of the fault (its
    alarms stuck until something restarts it)."""
    return bool(r["lost"] or r["duplicated"] or r["not_notified"] or r["components_exited"])


COLUMNS = [
    ("scenario", "scenario", 18),
    ("sent", "sent", 5),
    ("acked", "acked", 5),
    ("recorded", "rec", 5),
    ("duplicated", "dup", 4),
    ("lost", "lost", 4),
    ("not_notified", "unnot", 5),
    ("joined_open_incident", "join", 4),
    ("starved_presses", "starv", 5),
    ("publish_errors", "perr", 4),
    ("officer_redeliveries", "redl", 4),
    ("fault_outage_s", "out_s", 5),
    ("exited", "exited", 16),
    ("drain_s", "drn_s", 5),
    ("worst_delay_ms", "worst_ms", 8),
]


def table(results: list[dict[str, Any]]) -> str:
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (_, h, w) in enumerate(COLUMNS)) + "  p99_ms  verdict"]
    for r in results:
        r = {**r, "exited": ",".join(r["components_exited"]) or "-"}
        cells = [str(r[k]).rjust(w) if i else str(r[k]).ljust(w) for i, (k, _, w) in enumerate(COLUMNS)]
        p99 = r["press_to_notification_ms"]["p99"]
        lines.append("  ".join(cells) + f"  {p99!s:>6}  {'FAIL' if bad(r) else 'ok'}")
    return "\n".join(lines)


async def run_scenarios(rig: Rig, scenarios: list[Scenario], pace: Pace, run_tag: str) -> list[dict[str, Any]]:
    results = []
    for sc in scenarios:
        say(f"{sc.name}: {pace.rate:.0f}/s for {pace.duration_s:.0f} s, fault at {pace.fault_at_s:.0f} s")
        try:
            r = await rig.run(sc, pace, f"{sc.name.replace('-', '')}x{run_tag}")
        finally:
            stack_up(rig.stack)  # whatever happened, every service is up for the next one
        say(
            f"  sent {r['sent']}, acked {r['acked']}, recorded {r['recorded']}, duplicated {r['duplicated']}, "
            f"lost {r['lost']}, not notified {r['not_notified']}, worst {r['worst_delay_ms']} ms, "
            f"drain {r['drain_s']} s -> {'FAIL' if bad(r) else 'ok'}"
        )
        results.append(r)
    return results


async def main_async(args: argparse.Namespace) -> int:
    pace = SHORT if args.short else FULL
    scenarios = [s for s in SCENARIOS if not args.only or s.name in args.only or s.target in args.only]
    run_tag = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    out_dir = REPO / "artifacts" / "chaos"
    say("bringing up the chaos stack (.stack-chaos)")
    stack = stack_env(CHAOS_STACK)
    say(f"preparing a fresh database with the demo city and {args.devices} devices")
    settings = await prepare(Settings.from_env(stack), args.devices, run_tag)
    rig = Rig(stack, settings, device_ids(args.devices), out_dir / f"logs-{run_tag}")
    t0 = time.monotonic()
    try:
        await rig.start()
        say("warm-up")
        warm = await drive(rig.fleet, rate=pace.rate, duration=3, tag=f"warmx{run_tag}")
        assert rig.pool is not None
        await drain(rig.pool, warm, rig.probe, 30)
        results = await run_scenarios(rig, scenarios, pace, run_tag)
    finally:
        await rig.stop()
    report = {
        "when": datetime.now(UTC).isoformat(),
        "mode": "short" if args.short else "full",
        "pace": pace.__dict__,
        "devices": args.devices,
        "total_s": round(time.monotonic() - t0, 1),
        "scenarios": results,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"ledger-{run_tag}.json"
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print()
    print(table(results))
    print()
    say(f"ledger written to {path.relative_to(REPO)}; component logs in {rig.comps.log_dir.relative_to(REPO)}")
    failed = [r["scenario"] for r in results if bad(r)]
    if failed:
        say(f"FAILED: {', '.join(failed)}")
        return 1
    say("every scenario: nothing lost, nothing duplicated, every alarm notified")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="about 10 s of load per scenario")
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--only", nargs="*", help="scenario names or targets (e.g. gateway mosquitto)")
    args = p.parse_args()
    configure("warning")  # the generator's own MQTT clients; the components log to files
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()

"""Fault injection on the whole alarm path: `make chaos` (python -m chaos.run [--short]).

On a stack of its own (.stack-chaos, other ports) and a fresh database, the components run as
child processes while ~200 simulated devices press alarm buttons at ~20/s. The components
reach Kafka and Postgres through TCP proxies of the suite's own (chaos/tcp_proxy.py). One
fault at a time, mid-stream: a component SIGKILLed and restarted with the same instance id;
Mosquitto, Kafka or Postgres stopped and started again; the network to Kafka or to Postgres
cut for a few seconds (blackholed, or reset) and given back; and, on a three-broker KRaft
cluster started by the suite (replication factor 3, min.insync.replicas 2), one broker
SIGKILLed for good. A dozen more devices raise intrusion alarms that nobody closes, under a
short escalation policy, so escalation deadlines pass during every fault.

After each fault the backlog drains and a ledger is drawn from the generator's records, the
officer probe and Postgres: sent, acknowledged to the device, recorded, duplicated, lost, not
notified, worst press-to-notification delay, and the escalation deadlines: how many fired,
how late (at most the fault's length plus a few seconds), how many were missed. A table on
the terminal, JSON under artifacts/chaos/; the exit code is non-zero when any scenario lost,
duplicated, left an alarm without a notification or a deadline unkept.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from bench import harness
from bench.harness import say
from bench.load import Fleet
from bench.procs import REPO
from chaos.faults import ChaosComponents, restart_service, stack_up
from chaos.kafka_cluster import KafkaCluster
from chaos.ledger import (
    Probe,
    Resolver,
    close_kept,
    deadline_ledger,
    drain,
    drive,
    ledger,
    recorded_ids,
    unnotified,
)
from chaos.tcp_proxy import TcpProxy
from core import db, kafka
from core.incident_model import LEVELS, LevelPolicy, Policy
from core.logging import configure
from core.mosquitto_passwords import hash_password
from core.platform_mqtt import discard_session
from core.settings import Settings
from dispatch.credentials import sync_broker_credentials, wait_broker_accepts
from dispatch.demo_city import seed, units

# Ports of the chaos stack, and of what the suite puts in front of it: the TCP proxies the
# components go through (Postgres 55496 -> 55435; Kafka 19191 -> the broker's second listener
# 19190, which advertises 19191, so every connection of a client stays on the proxy), and the
# three-broker cluster (19271-19273, controllers 19281-19283).
PG_PROXY_PORT = 55496
KAFKA_PROXIED_PORT = 19190
KAFKA_PROXY_PORT = 19191
CHAOS_STACK = {
    "PINGAN_STACK_DIR": str(REPO / ".stack-chaos"),
    "PINGAN_PG_PORT": "55435",
    "PINGAN_MQTT_PORT": "18833",
    "PINGAN_KAFKA_PORT": "19098",
    "PINGAN_KAFKA_CONTROLLER_PORT": "19099",
    "PINGAN_KAFKA_PROXIED_PORT": str(KAFKA_PROXIED_PORT),
    "PINGAN_KAFKA_PROXIED_ADVERTISED": f"127.0.0.1:{KAFKA_PROXY_PORT}",
}
COMPONENTS = ["gateway", "worker", "notifier", "relay", "timer"]
SERVICES = ["mosquitto", "kafka", "postgres"]
DEVICE_PASSWORD = "chaos-device-password"

# Devices whose intrusion alarms stay open (the resolver leaves them), under a short policy:
# every level has DEADLINE_S to acknowledge, so deadlines pass every few seconds, faults or not.
KEEP_PREFIX = "cw"
N_KEPT = 12
DEADLINE_S = 4
KEPT_TYPE = "alarm.intrusion"  # priority 2: the panic presses keep the default policy
KEPT_PRIORITY = 2


@dataclass(frozen=True)
class Scenario:
    name: str
    target: str  # a component, a service, or "kafka-cluster"
    action: str  # kill | restart | cut | kill-broker
    mode: str = ""  # of a cut: blackhole | reset


SCENARIOS = (
    [Scenario(f"kill-{c}", c, "kill") for c in COMPONENTS]
    + [Scenario(f"restart-{s}", s, "restart") for s in SERVICES]
    + [Scenario(f"cut-{t}-{m}", t, "cut", m) for t in ("kafka", "postgres") for m in ("blackhole", "reset")]
    + [Scenario("kill-kafka-broker", "kafka-cluster", "kill-broker")]
)


@dataclass(frozen=True)
class Pace:
    rate: float = 20.0
    duration_s: float = 25.0
    fault_at_s: float = 8.0
    down_s: float = 2.0
    cut_s: float = 6.0  # how long the network stays cut
    drain_s: float = 90.0
    slack_s: float = 5.0  # a deadline may fire this late, plus what is left of the fault


FULL = Pace()
SHORT = Pace(duration_s=10.0, fault_at_s=3.0, cut_s=5.0)


def stack_env(stack: dict[str, str]) -> dict[str, str]:
    return harness.stack_env(stack)


def device_ids(n: int, prefix: str = "cx") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def kept_ids() -> list[str]:
    return device_ids(N_KEPT, KEEP_PREFIX)


async def short_policy(conn: asyncpg.Connection[Any]) -> None:
    """The city's policy for the kept devices' alarms: DEADLINE_S at every level (the whole
    city inherits it)."""
    city = next(u.code for u in units() if u.level == "city")
    policy = Policy(
        KEPT_PRIORITY,
        tuple(LevelPolicy(level=lv, ack_s=DEADLINE_S, arrive_s=600) for lv in LEVELS),
        cancel_grace_s=0,
    )
    await conn.execute(
        """INSERT INTO escalation_policies (unit_code, priority, levels, cancel_grace_s, updated_by)
           VALUES ($1, $2, $3, 0, 'chaos')
           ON CONFLICT (unit_code, priority) DO UPDATE SET levels = EXCLUDED.levels, updated_by = 'chaos'""",
        city,
        KEPT_PRIORITY,
        policy.to_json()["levels"],
    )


def via(dsn: str, port: int) -> str:
    """The DSN with its port replaced (to go through a proxy on the same host)."""
    u = urlsplit(dsn)
    netloc = u.netloc.rsplit(":", 1)[0] if u.port else u.netloc
    return urlunsplit(u._replace(netloc=f"{netloc}:{port}"))


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
        await add_devices(conn, settings, device_ids(n_devices) + kept_ids(), DEVICE_PASSWORD)
        await short_policy(conn)
    finally:
        await conn.close()
    await harness.drop_old_kafka(settings.kafka_bootstrap, "pingan-chaos")
    await kafka.ensure_topics(settings)
    await wait_broker_accepts(settings, device_ids(n_devices)[0], DEVICE_PASSWORD)
    return settings


class Rig:
    """The components as child processes, the device fleet, the officer probe, the resolver;
    optionally the components' way to Kafka and Postgres through TCP proxies (`proxies`:
    "kafka" and/or "postgres"), or Kafka as a cluster of the suite's own (`cluster`)."""

    def __init__(
        self,
        stack: dict[str, str],
        settings: Settings,
        devices: list[str],
        log_dir: Path,
        *,
        proxies: dict[str, TcpProxy] | None = None,
        cluster: KafkaCluster | None = None,
        kept: list[str] | None = None,
    ) -> None:
        self.stack = stack  # the stack's env (for deploy/stack.sh)
        self.settings = settings
        self.proxies = proxies or {}
        self.cluster = cluster
        comp_settings = settings
        if "postgres" in self.proxies:
            comp_settings = comp_settings.replace(
                database_url=via(settings.database_url, self.proxies["postgres"].listen_port)
            )
        if "kafka" in self.proxies:
            comp_settings = comp_settings.replace(kafka_bootstrap=self.proxies["kafka"].address)
        self.component_settings = comp_settings
        child_env = dict(stack)
        child_env.update(comp_settings.to_env())
        self.comps = ChaosComponents(child_env, COMPONENTS, log_dir)
        self.devices = devices
        self.fleet = Fleet(settings, devices, DEVICE_PASSWORD)
        self.kept = Fleet(settings, kept or [], DEVICE_PASSWORD, receipts=False)
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
        if self.kept.device_ids:
            await self.kept.connect()
            if len(self.kept.clients) != len(self.kept.device_ids):
                raise RuntimeError(f"only {len(self.kept.clients)} of {len(self.kept.device_ids)} kept devices")
        await self.probe.start()
        self.resolver = Resolver(self.pool, KEEP_PREFIX if self.kept.device_ids else "")
        self.resolver.start()

    async def stop(self) -> None:
        if self.resolver:
            await self.resolver.stop()
        await self.probe.stop()
        await self.fleet.close()
        await self.kept.close()
        self.comps.stop()
        # This rig's gateway is gone for good (core.platform_mqtt.discard_session).
        await discard_session(self.settings, f"pingan-gw-{self.settings.instance_id}", timeout=5)
        if self.pool:
            await self.pool.close()

    async def _fault(self, sc: Scenario, pace: Pace) -> None:
        if sc.action == "restart":
            await restart_service(self.stack, sc.target, pace.down_s)
        elif sc.action == "kill":
            self.comps.kill(sc.target)
            await asyncio.sleep(pace.down_s)
            self.comps.spawn(sc.target)
        elif sc.action == "cut":
            proxy = self.proxies[sc.target]
            await proxy.cut("reset" if sc.mode == "reset" else "blackhole")
            try:
                await asyncio.sleep(pace.cut_s)
            finally:
                await proxy.restore()
        elif sc.action == "kill-broker":
            assert self.cluster is not None
            leaders = await self.cluster.leaders(kafka.topics(self.settings).alarm_events)
            counts = {n: sum(1 for lead in leaders.values() if lead == n) for n in self.cluster.nodes}
            node = max(counts, key=lambda n: counts[n])  # the leader of the most partitions
            self.killed_node = node
            self.cluster.kill(node)
        else:
            raise ValueError(f"unknown fault {sc.action}")

    async def _press_kept(self, tag: str) -> tuple[list[str], list[asyncio.Future[None]]]:
        ids, futs = [], []
        for c in self.kept.clients:
            eid, fut = self.kept.press(KEPT_TYPE, tag, client=c)
            ids.append(eid)
            futs.append(fut)
        return ids, futs

    async def run(self, sc: Scenario, pace: Pace, tag: str) -> dict[str, Any]:
        assert self.pool is not None
        for name, up in self.comps.alive().items():  # a component that died by itself comes back
            if not up:
                self.comps.spawn(name)
        kept_tag = tag + "k"
        kept_ids, kept_futs = await self._press_kept(kept_tag)
        task = asyncio.create_task(drive(self.fleet, rate=pace.rate, duration=pace.duration_s, tag=tag))
        await asyncio.sleep(pace.fault_at_s)
        t0, w0 = time.monotonic(), time.time()
        await self._fault(sc, pace)
        t1, w1 = time.monotonic(), time.time()
        outage = t1 - t0
        sent = await task
        sent.fault = (t0, t1)
        sent.fault_wall = (w0, w1)
        drained = await drain(self.pool, sent, self.probe, pace.drain_s)
        out: dict[str, Any] = {"scenario": sc.name, "target": sc.target, "tag": tag}
        if sc.action == "kill-broker":
            out["killed_broker"] = self.killed_node
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
        # The kept devices' presses: acknowledged ones recorded too; then their deadlines.
        kept_acked = {e for e, f in zip(kept_ids, kept_futs, strict=True) if f.done() and not f.exception()}
        out["kept_lost"] = len(kept_acked - (await recorded_ids(self.pool, kept_tag)).keys())
        out.update(await deadline_ledger(self.pool, [tag, kept_tag], sent.fault_wall, pace.slack_s))
        await close_kept(self.pool, KEEP_PREFIX)
        out["fault_outage_s"] = round(outage, 1)
        out["load_s"] = round(sent.duration_s, 1)
        out["drain_s"] = round(drained, 1)
        out["components_alive"] = self.comps.alive()
        out["resolver_errors"] = self.resolver.errors if self.resolver else 0
        return out


def bad(r: dict[str, Any]) -> bool:
    """Lost, duplicated, an alarm never notified, a deadline missed or acted on too late, or a
    component that died of the fault (its alarms stuck until something restarts it)."""
    return bool(
        r["lost"]
        or r["duplicated"]
        or r["not_notified"]
        or r["components_exited"]
        or r.get("notifications_stuck")
        or r.get("kept_lost")
        or r.get("deadlines_missed")
        or r.get("deadlines_too_late")
    )


COLUMNS = [
    ("scenario", "scenario", 22),
    ("sent", "sent", 5),
    ("acked", "acked", 5),
    ("recorded", "rec", 5),
    ("duplicated", "dup", 4),
    ("lost", "lost", 4),
    ("not_notified", "unnot", 5),
    ("notifications_stuck", "stuck", 5),
    ("joined_open_incident", "join", 4),
    ("starved_presses", "starv", 5),
    ("publish_errors", "perr", 4),
    ("officer_redeliveries", "redl", 4),
    ("fault_outage_s", "out_s", 5),
    ("exited", "exited", 8),
    ("drain_s", "drn_s", 5),
    ("worst_delay_ms", "worst_ms", 8),
    ("deadlines_fired", "dl", 4),
    ("deadlines_in_fault", "dl_f", 4),
    ("deadlines_missed", "dl_miss", 7),
    ("worst_lateness_s", "late_s", 6),
]


def table(results: list[dict[str, Any]]) -> str:
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (_, h, w) in enumerate(COLUMNS)) + "  p99_ms  verdict"]
    for r in results:
        r = {**r, "exited": ",".join(r["components_exited"]) or "-"}
        cells = [str(r.get(k, "-")).rjust(w) if i else str(r[k]).ljust(w) for i, (k, _, w) in enumerate(COLUMNS)]
        p99 = r["press_to_notification_ms"]["p99"]
        lines.append("  ".join(cells) + f"  {p99!s:>6}  {'FAIL' if bad(r) else 'ok'}")
    return "\n".join(lines)


async def run_scenarios(rig: Rig, scenarios: list[Scenario], pace: Pace, run_tag: str) -> list[dict[str, Any]]:
    results = []
    for sc in scenarios:
        length = pace.cut_s if sc.action == "cut" else pace.down_s
        say(
            f"{sc.name}: {pace.rate:.0f}/s for {pace.duration_s:.0f} s, fault at {pace.fault_at_s:.0f} s"
            + (f" for {length:.0f} s" if sc.action in ("cut", "kill", "restart") else "")
        )
        try:
            r = await rig.run(sc, pace, f"{sc.name.replace('-', '')}x{run_tag}")
        finally:
            stack_up(rig.stack)  # whatever happened, every service is up for the next one
        say(
            f"  sent {r['sent']}, acked {r['acked']}, recorded {r['recorded']}, duplicated {r['duplicated']}, "
            f"lost {r['lost']}, not notified {r['not_notified']}, worst {r['worst_delay_ms']} ms, "
            f"drain {r['drain_s']} s; deadlines fired {r['deadlines_fired']} ({r['deadlines_in_fault']} in the "
            f"fault), missed {r['deadlines_missed']}, worst lateness {r['worst_lateness_s']} s "
            f"-> {'FAIL' if bad(r) else 'ok'}"
        )
        results.append(r)
    return results


async def warm_up(rig: Rig, pace: Pace, tag: str) -> None:
    say("warm-up")
    warm = await drive(rig.fleet, rate=pace.rate, duration=3, tag=tag)
    assert rig.pool is not None
    await drain(rig.pool, warm, rig.probe, 30)


async def on_stack(
    stack: dict[str, str],
    settings: Settings,
    devices: list[str],
    scenarios: list[Scenario],
    pace: Pace,
    run_tag: str,
    log_dir: Path,
) -> list[dict[str, Any]]:
    """The scenarios on the chaos stack, the components behind the TCP proxies."""
    proxies = {
        "postgres": TcpProxy(PG_PROXY_PORT, "127.0.0.1", urlsplit(settings.database_url).port or 5432, name="pg"),
        "kafka": TcpProxy(KAFKA_PROXY_PORT, "127.0.0.1", KAFKA_PROXIED_PORT, name="kafka"),
    }
    for p in proxies.values():
        await p.start()
    rig = Rig(stack, settings, devices, log_dir, proxies=proxies, kept=kept_ids())
    try:
        await rig.start()
        await warm_up(rig, pace, f"warmx{run_tag}")
        return await run_scenarios(rig, scenarios, pace, run_tag)
    finally:
        await rig.stop()
        for p in proxies.values():
            await p.stop()


async def on_cluster(
    stack: dict[str, str],
    settings: Settings,
    devices: list[str],
    scenarios: list[Scenario],
    pace: Pace,
    run_tag: str,
    log_dir: Path,
) -> list[dict[str, Any]]:
    """The scenarios on a three-broker Kafka cluster of the suite's own (topics with
    replication factor 3, min.insync.replicas 2); the same database, MQTT broker and gateway
    instance id, other topics and consumer group."""
    cluster = KafkaCluster(Path(stack["PINGAN_STACK_DIR"]))
    say(f"starting a three-broker Kafka cluster ({cluster.bootstrap})")
    try:
        await asyncio.to_thread(cluster.start)
        await cluster.wait_ready()
        settings = settings.replace(
            kafka_bootstrap=cluster.bootstrap,
            kafka_replication=3,
            kafka_topic_prefix=settings.kafka_topic_prefix + "-rf3",
            kafka_consumer_group=settings.kafka_consumer_group + "-rf3",
        )
        rig = Rig(stack, settings, devices, log_dir, cluster=cluster, kept=kept_ids())
        try:
            await rig.start()
            await warm_up(rig, pace, f"warmrf3x{run_tag}")
            return await run_scenarios(rig, scenarios, pace, run_tag)
        finally:
            await rig.stop()
    finally:
        cluster.stop()


async def main_async(args: argparse.Namespace) -> int:
    pace = SHORT if args.short else FULL
    if args.cut_s is not None:
        pace = replace(pace, cut_s=args.cut_s)
    scenarios = [s for s in SCENARIOS if not args.only or s.name in args.only or s.target in args.only]
    run_tag = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    out_dir = REPO / "artifacts" / "chaos"
    log_dir = out_dir / f"logs-{run_tag}"
    say("bringing up the chaos stack (.stack-chaos)")
    stack = stack_env(CHAOS_STACK)
    say(f"preparing a fresh database with the demo city and {args.devices} devices")
    settings = await prepare(Settings.from_env(stack), args.devices, run_tag)
    broker_at_start = await harness.broker_store(settings)
    say(f"the broker holds {broker_at_start}")
    if broker_at_start.get("stored_messages", 0) > 10_000:
        say(
            "  warning: that is what earlier runs left (sessions never ended): Mosquitto saves and loads it at"
            " each restart, and restart-mosquitto is slower for it (deploy/stack.sh wipe with"
            " PINGAN_STACK_DIR=.stack-chaos starts afresh)"
        )
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    try:
        plain = [s for s in scenarios if s.action != "kill-broker"]
        if plain:
            results += await on_stack(stack, settings, device_ids(args.devices), plain, pace, run_tag, log_dir)
        clustered = [s for s in scenarios if s.action == "kill-broker"]
        if clustered:
            results += await on_cluster(
                stack, settings, device_ids(args.devices), clustered, pace, run_tag, log_dir / "rf3"
            )
    finally:
        report = {
            "when": datetime.now(UTC).isoformat(),
            "mode": "short" if args.short else "full",
            "pace": pace.__dict__,
            "devices": args.devices,
            "kept_devices": N_KEPT,
            "deadline_s": DEADLINE_S,
            "broker_at_start": broker_at_start,
            "total_s": round(time.monotonic() - t0, 1),
            "scenarios": results,
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"ledger-{run_tag}.json"
        path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print()
    print(table(results))
    print()
    say(f"ledger written to {path.relative_to(REPO)}; component logs in {log_dir.relative_to(REPO)}")
    failed = [r["scenario"] for r in results if bad(r)]
    if failed:
        say(f"FAILED: {', '.join(failed)}")
        return 1
    say("every scenario: nothing lost, nothing duplicated, every alarm notified, every deadline kept")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m chaos.run", description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="about 10 s of load per scenario")
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--only", nargs="*", help="scenario names or targets (e.g. gateway mosquitto kafka-cluster)")
    p.add_argument("--cut-s", type=float, help="seconds the network stays cut (default 6, 5 with --short)")
    args = p.parse_args()
    configure("warning")  # the generator's own MQTT clients; the components log to files
    try:
        with harness.one_run_at_a_time(CHAOS_STACK, "the fault suite"):
            code = asyncio.run(main_async(args))
    except harness.StackBusy as exc:
        say(f"fault suite not started: {exc}")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()

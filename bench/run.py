"""The benchmark of the whole alarm path: `make bench` (quick, a few minutes) or
`make bench-full`. Everything runs on this machine: Mosquitto, Kafka, Postgres, the components
and the load generator. The components run as one would run them on a small machine: the
gateway in one process, the worker, notifier, relay and timer in another (`--layout separate`:
one process each). Floors are measured in the same run and the
alarm path is reported against them. Results: a table on the terminal and a JSON file under
artifacts/bench/.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench import harness, statements
from bench.floors import kafka_floor, mqtt_floor, postgres_floor, postgres_round_trip_cpu
from bench.harness import say
from bench.load import LeanFleet, LeanOfficerProbe, StepResult, collect, drive, wait_until
from bench.procs import REPO, Components, MachineCpu, Watched, cpu_seconds, service_pid
from bench.search import geometric, highest_held
from bench.stages import alarm_stages, stages_line
from bench.stats import summary, worst_per_second
from core import db, event_loop, kafka
from core.mosquitto_passwords import hash_password
from core.platform_mqtt import discard_session
from core.settings import Settings
from dispatch.components import YOUNG_COLLECTION_EVERY
from dispatch.credentials import sync_broker_credentials, wait_broker_accepts
from dispatch.demo_city import seed, units

BENCH_STACK = {
    "PINGAN_STACK_DIR": str(REPO / ".stack-bench"),
    "PINGAN_PG_PORT": "55434",
    "PINGAN_MQTT_PORT": "18832",
    "PINGAN_KAFKA_PORT": "19096",
    "PINGAN_KAFKA_CONTROLLER_PORT": "19097",
}
# Steps that halve the gap between the last rate held and the first one not held.
REFINE_STEPS = 2
# A heartbeat rate is held when what was sent is recorded within this share of the step's
# length after the step ends: a backlog that small is the pipeline's depth, not a growing queue.
HB_DRAIN_SHARE = 0.1
COMPONENTS = ["gateway", "worker", "notifier", "relay", "timer"]
# --layout paired: the gateway in one process, the rest of the alarm path in another.
PAIRED = {"workers": ["worker", "notifier", "relay", "timer"]}
DEVICE_PASSWORD = "bench-device-password"

QUICK = {
    "floor_n": 300,
    "step_s": 10,
    "drain_s": 20,
    "light_s": 20,
    "hb_step_s": 5,
    "burst_s": 20,
    "connections": 10000,
    "conn_s": 20,
    "fleet": 8000,  # an alarm press needs a device without an open incident: a burst needs many
    "settle_s": 10,
}
FULL = {
    "floor_n": 2000,
    "step_s": 60,
    "drain_s": 60,
    "light_s": 60,
    "hb_step_s": 20,
    "burst_s": 300,
    "connections": 10000,
    "conn_s": 60,
    "fleet": 10000,
    "settle_s": 30,
}


def stack_env() -> dict[str, str]:
    return harness.stack_env(BENCH_STACK)


async def prepare(base: Settings, n_devices: int, tag: str) -> Settings:
    dsn = await harness.fresh_database(base.database_url, "pingan_bench", tag)
    settings = base.replace(
        database_url=dsn,
        kafka_topic_prefix=f"pingan-bench-{tag}",
        kafka_consumer_group=f"pingan-bench-{tag}",
        instance_id=f"bench-{tag}",
        correlation_threshold=10**9,  # every press opens an incident of its own
        # Each run's gateway has a persistent session of its own: let it expire soon after the
        # run, or the broker keeps queueing every later run's events for it.
        mqtt_session_expiry_s=120,
        log_level="warning",
        http_port=0,
    )
    conn = await db.connect(settings.database_url)
    try:
        await db.migrate(conn)
        await seed(conn, settings)
        grids = [u.code for u in units() if u.level == "grid"]
        encoded = hash_password(DEVICE_PASSWORD)
        rows = [(f"b{i:06d}", grids[i % len(grids)], "panic_button", f"bench {i}", encoded) for i in range(n_devices)]
        await conn.executemany(
            "INSERT INTO devices (device_id, grid_code, kind, address, mqtt_password_hash) VALUES ($1, $2, $3, $4, $5)",
            rows,
        )
        await sync_broker_credentials(conn, settings)
    finally:
        await conn.close()
    await harness.drop_old_kafka(settings.kafka_bootstrap, "pingan-bench")
    await kafka.ensure_topics(settings)
    await wait_broker_accepts(settings, "b000000", DEVICE_PASSWORD)
    return settings


class BenchAborted(Exception):
    """A service or component died mid-run: stop, rather than report a broken system's figures."""


# Locked in incident_id order, as the worker and the notifier lock them: in the scan's order
# this deadlocked with the worker under a long burst.
RESOLVE_NOTIFIED = (
    "UPDATE incidents SET status = 'resolved', outcome = 'resolved', closed_at = clock_timestamp(), "
    "closed_by = 'bench', awaiting = 'none', deadline_at = NULL, remind_at = NULL, due_at = NULL "
    "WHERE incident_id IN (SELECT incident_id FROM incidents "
    "WHERE closed_at IS NULL AND first_notified_at IS NOT NULL ORDER BY incident_id FOR UPDATE)"
)
# A plain index scan of the open incidents, not a bitmap scan (see Resolver).
RESOLVE_SETTINGS = ("SET LOCAL enable_bitmapscan = off",)


async def resolve_round(conn: asyncpg.Connection[Any]) -> int:
    """Close every open incident whose officer was paged; how many were closed."""
    async with conn.transaction():
        for setting in RESOLVE_SETTINGS:
            await conn.execute(setting)
        status = await conn.execute(RESOLVE_NOTIFIED)
    return int(status.split()[-1])


class Resolver:
    """Officers who close every incident as soon as it was notified, so a device is free to
    open a new incident with its next press (alarms latch otherwise).

    Its round reads the open incidents through a partial index of them, where every incident
    closed since the table's last vacuum leaves an entry. A bitmap scan (the planner's choice)
    reads those entries again every round: 15,578 entries and 1,586 heap pages for 55 open
    incidents at the end of a quick run, 7 ms for that round. A plain index scan marks them
    dead as it passes them (the next round read 72 pages). Over whole quick runs the two cost
    Postgres about the same (5.22 and 5.64 s of CPU, 32 and 33 µs a closed incident: the
    update of the incident is most of it), but the plain scan's round does not grow with
    what the run has closed. The officers' load on Postgres is the benchmark's, not the
    system's: `cost()` says what it was."""

    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self.pool = pool
        self.task: asyncio.Task[None] | None = None
        self.rounds = 0
        self.closed = 0
        self.busy_s = 0.0
        self._backend_cpu: dict[int, float] = {}  # backend pid -> its CPU seconds, last read

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="bench.resolver")

    async def _run(self) -> None:
        while True:
            try:
                # One connection for the rounds, its server process's CPU read after each.
                async with self.pool.acquire() as conn:
                    pid = int(await conn.fetchval("SELECT pg_backend_pid()"))
                    base = cpu_seconds(pid)
                    while True:
                        t = time.monotonic()
                        self.closed += await resolve_round(conn)
                        self.rounds += 1
                        self.busy_s += time.monotonic() - t
                        self._backend_cpu[pid] = cpu_seconds(pid) - base
                        await asyncio.sleep(0.5)
            except (asyncpg.PostgresError, OSError) as exc:
                # One failed round must not end the resolving: the devices would stay busy and
                # every later press would join its device's open incident.
                say(f"  resolver: {exc!r}; again in 0.5 s")
                await asyncio.sleep(0.5)

    def cost(self) -> dict[str, float]:
        """Rounds, incidents closed, the rounds' wall time (lock waits included) and the CPU
        its Postgres server processes spent (the machine is this one)."""
        return {
            "rounds": self.rounds,
            "closed": self.closed,
            "busy_s": round(self.busy_s, 2),
            "postgres_cpu_s": round(sum(self._backend_cpu.values()), 2),
        }

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


async def count_recorded(pool: asyncpg.Pool[Any], tag: str, since_id: int = 0, *, heartbeats: bool = False) -> int:
    """The events of a step recorded so far. `since_id`: the largest event row id before the
    step, so that only the step's rows are read (the table holds every step before it).
    `heartbeats`: the step's heartbeats, which have a table of their own (device_heartbeats)."""
    if heartbeats:
        return int(await pool.fetchval("SELECT count(*) FROM device_heartbeats WHERE event_id LIKE $1", tag + "-%"))
    return int(
        await pool.fetchval("SELECT count(*) FROM events WHERE id > $2 AND event_id LIKE $1", tag + "-%", since_id)
    )


async def last_event_id(pool: asyncpg.Pool[Any]) -> int:
    return int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM events"))


async def all_recorded(pool: asyncpg.Pool[Any], tag: str, since_id: int, expected: int) -> bool:
    """Whether the `expected` events of a step are recorded. Polled while a backlog drains, so
    first the cheap look (the newest row id: ids of rows inserted since the step began, gaps
    included, can only be more than the step's rows), and the count of the step's rows only
    once it can be enough: a count every poll took the Postgres the backlog waited for."""
    if await last_event_id(pool) - since_id < expected:
        return False
    return await count_recorded(pool, tag, since_id) >= expected


async def heartbeats_recorded(pool: asyncpg.Pool[Any], tag: str, last_seqs: dict[str, int], expected: int) -> bool:
    """Whether the `expected` heartbeats of a step are recorded. `last_seqs`: device id -> the
    sequence of its last heartbeat in the step. First the cheap look (every such device's
    last_seq has reached it: an index lookup each), and the count of the step's rows (a scan of
    every step's heartbeats) only once it can be enough."""
    ids = list(last_seqs)
    reached = await pool.fetchval(
        "SELECT count(*) FROM unnest($1::text[], $2::bigint[]) AS v(device_id, seq) "
        "JOIN devices d ON d.device_id = v.device_id WHERE d.last_seq >= v.seq",
        ids,
        [last_seqs[i] for i in ids],
    )
    if int(reached) < len(ids):
        return False
    return await count_recorded(pool, tag, heartbeats=True) >= expected


async def run_step(
    ctx: dict[str, Any],
    *,
    rate: float,
    duration: float,
    tag: str,
    type_: str = "alarm.panic",
    drain_s: float,
    stages: bool = False,
) -> dict[str, Any]:
    """One step at `rate` for `duration` s. `stages`: split the alarms' latency into stages too
    (bench.stages; a join over every incident, so for the light load and one-step runs only)."""
    fleet: LeanFleet = ctx["fleet"]
    probe: LeanOfficerProbe = ctx["probe"]
    pool = ctx["pool"]
    watched: list[Watched] = ctx["watched"]
    for w in watched:
        w.start()
    machine_cpu = MachineCpu()
    machine_cpu.start()
    sampler = asyncio.create_task(_sample(watched), name="bench.sampler")
    joined0, starved0 = fleet.joined, fleet.starved
    since_id = await last_event_id(pool)
    seqs0 = fleet.seqs()
    if ctx.get("statements"):
        await statements.reset(pool)
    res, ids = await drive(fleet, rate=rate, duration=duration, type_=type_, tag=tag)
    alarm = type_ != "device.heartbeat"
    last_seqs = {d: s for d, s in fleet.seqs().items() if seqs0.get(d) != s}

    async def drained() -> bool:
        if not probe.connected:
            raise BenchAborted(f"the officer probe lost its connection during step {tag}: no page after it is seen")
        if alarm and not await all_recorded(pool, tag, since_id, res.acked):
            return False
        if not alarm and not await heartbeats_recorded(pool, tag, last_seqs, res.acked):
            return False
        # Every press paged an officer, or joined an incident whose officer was paged.
        return not alarm or sum(1 for e in ids if e in probe.notified_ms or e in fleet.joined_ids) >= res.acked

    # The drain runs from the last press sent, not from when its PUBACKs were all counted.
    counted_at = time.monotonic()
    drain = await wait_until(drained, drain_s)
    if drain >= 0:
        drain = round(drain + (counted_at - res.sent_until), 3)
    dead = [f"{w.name} (pid {w.pid})" for w in watched if not w.alive()]
    if dead:
        raise BenchAborted(f"{', '.join(dead)} died during step {tag}: the figures from here on would be wrong")
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    top_statements = await statements.top(pool, res.acked) if ctx.get("statements") else None
    recorded = await count_recorded(pool, tag, since_id, heartbeats=not alarm)
    collect(res, ids, fleet, probe)
    cpu = {w.name: round(w.cpu_share(), 3) for w in watched}
    rss = {w.name: round(w.rss_max, 1) for w in watched}
    out = _step_json(res, recorded, drain, cpu, rss, alarm)
    out["machine_cpu"] = machine_cpu.shares()
    out["joined_open_incident"] = fleet.joined - joined0
    out["no_free_device"] = fleet.starved - starved0
    out["throughput_per_s"] = round(recorded / (duration + max(drain, 0.0)), 1)
    if alarm:
        out["worst_per_second_ms"] = worst_per_second(ids, fleet.pressed, probe.notified_ms)
        if stages:
            out["stages_ms"] = await alarm_stages(pool, tag, since_id)
    if top_statements is not None:
        out["statements"] = top_statements
        say(f"  statements of {tag}, by time:")
        for line in statements.statements_lines(top_statements):
            say(line)
    out["tag"] = tag
    out["events_after_id"] = since_id
    out["heartbeats"] = not alarm
    return out


async def _sample(watched: list[Watched]) -> None:
    while True:
        for w in watched:
            w.sample()
        await asyncio.sleep(0.5)


def _step_json(
    res: StepResult, recorded: int, drain: float, cpu: dict[str, float], rss: dict[str, float], alarm: bool
) -> dict[str, Any]:
    notif = summary(res.to_notification_ms)
    lost = res.acked - recorded
    return {
        "label": res.label,
        "rate": res.rate,
        "duration_s": res.duration_s,
        "achieved_rate": round(res.achieved_rate, 1),
        "sent": res.sent,
        "acked_by_broker": res.acked,
        "publish_errors": res.publish_errors,
        "recorded": recorded,
        "lost": max(0, lost),
        "notified": notif["n"] if alarm else None,
        "drain_s": round(drain, 2),
        "press_to_notification_ms": notif if alarm else None,
        "press_to_receipt_ms": summary(res.to_receipt_ms),
        "press_to_puback_ms": summary(res.to_puback_ms),
        "cpu_share": cpu,
        "rss_max_mib": rss,
    }


def held(step: dict[str, Any]) -> bool:
    n = step["press_to_notification_ms"]
    return (
        step["achieved_rate"] >= 0.95 * step["rate"]
        and step["publish_errors"] == 0
        and step["acked_by_broker"] == step["sent"]
        and step["lost"] == 0
        and step["drain_s"] >= 0
        and (
            n is None
            or (
                n["n"] + step.get("joined_open_incident", 0) == step["acked_by_broker"]
                and n["p99"] is not None
                and n["p99"] < 1000
            )
        )
    )


def heartbeats_held_by(step: dict[str, Any], rate: float, step_s: float) -> bool:
    """A heartbeat step is held when it was sent at the rate, all of it reached the broker and
    was recorded, and the backlog drained within HB_DRAIN_SHARE of the step's length."""
    return (
        step["achieved_rate"] >= 0.95 * rate
        and step["publish_errors"] == 0
        and step["acked_by_broker"] == step["sent"]
        and step["lost"] == 0
        and 0 <= step["drain_s"] <= HB_DRAIN_SHARE * step_s
    )


async def order_kept(pool: asyncpg.Pool[Any], tag: str) -> bool:
    """Presses of one device were recorded in the order the device sent them."""
    bad = await pool.fetchval(
        "SELECT count(*) FROM (SELECT device_id, seq, lag(seq) OVER (PARTITION BY device_id ORDER BY id) AS prev "
        "FROM events WHERE event_id LIKE $1) t WHERE prev IS NOT NULL AND seq <= prev",
        tag + "-%",
    )
    return int(bad) == 0


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    p = FULL if args.full else QUICK
    tag = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    env = stack_env()
    base = Settings.from_env(env)
    n_devices = max(p["fleet"], p["connections"]) + 10
    say(f"preparing a database with the demo city and {n_devices} bench devices")
    settings = await prepare(base, n_devices, tag)
    if args.statements:
        conn = await db.connect(settings.database_url)
        try:
            await statements.enable(conn)  # before the components connect
        except statements.StatementsUnavailable as exc:
            stop = " ".join(f"{k}={v}" for k, v in BENCH_STACK.items())
            raise BenchAborted(f"{exc} ({stop} deploy/stack.sh down)") from None
        finally:
            await conn.close()
    child_env = dict(env)
    child_env.update(settings.to_env())
    log_dir = REPO / "artifacts" / "bench" / f"logs-{tag}"
    if args.layout == "paired":
        comps = Components(child_env, ["gateway", *PAIRED], log_dir, groups=PAIRED)
    else:
        comps = Components(child_env, COMPONENTS, log_dir)
    comps.start()
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=4)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "mode": "full" if args.full else "quick",
        "layout": args.layout,
        "event_loop": settings.event_loop,
        "machine": machine(),
    }
    fleet = LeanFleet(settings, [f"b{i:06d}" for i in range(p["fleet"])], DEVICE_PASSWORD)
    probe = LeanOfficerProbe(settings, fleet)
    resolver = Resolver(pool)
    try:
        say("floors at the start: MQTT QoS 1, Kafka acks=all, Postgres commit, each alone")
        results["floors_at_start"] = await measure_floors(settings, p["floor_n"], round_trip=True)

        say(f"connecting {len(fleet.device_ids)} devices")
        results["fleet_connect_s"] = round(await fleet.connect(), 2)
        await probe.start()
        freeze_generator()
        resolver.start()
        watched = [Watched(n, pr.pid) for n, pr in comps.procs.items()]
        for name, pid_file in (
            ("mosquitto", "mosquitto/mosquitto.pid"),
            ("kafka", "kafka/kafka.pid"),
            ("postgres", "pg/data/postmaster.pid"),
        ):
            pid = service_pid(Path(env["PINGAN_STACK_DIR"]) / pid_file)
            if pid:
                watched.append(Watched(name, pid))
        watched.append(Watched("load-generator", os.getpid(), tree=False))
        ctx = {"fleet": fleet, "probe": probe, "pool": pool, "watched": watched, "statements": args.statements}

        say("warm-up")
        await run_step(ctx, rate=20, duration=3, tag=f"warm{tag}", drain_s=30)

        say("generator ceiling: devices publishing where nobody listens (their status topic)")
        results["generator_ceiling_per_s"] = await generator_ceiling(fleet, 5.0)
        say(f"  {results['generator_ceiling_per_s']} QoS 1 publishes/s")

        if args.rate:
            say(f"one step at {args.rate:.0f}/s")
            step = await run_step(
                ctx,
                rate=args.rate,
                duration=args.seconds or p["step_s"],
                tag=f"one{tag}",
                drain_s=p["drain_s"],
                type_=args.type,
                stages=True,
            )
            step["held"] = held(step)
            results["one_step"] = step
            say(orjson.dumps(step, option=orjson.OPT_INDENT_2).decode())
            return results
        say("maximum sustained rate (every press opens an incident and notifies an officer)")
        steps: list[dict[str, Any]] = []

        async def alarms_held(rate: float) -> bool:
            steps.append(await alarm_step(ctx, p, rate, f"max{int(rate)}x{tag}"))
            return bool(steps[-1]["held"])

        # The steps grow by half; between the last rate held and the first one not held, the
        # gap is then halved twice, so the figure is within a quarter of that gap of the limit.
        best = await highest_held(
            alarms_held,
            geometric(100, 1.5, 20000),
            refine=REFINE_STEPS,
            before_refine=lambda: quiet(pool, steps[-1]),
        )
        results["max_rate"] = {"steps": steps, "max_sustained_per_s": best}
        max_rate = best or 50.0

        light = max(10.0, round(max_rate / 10))
        say("settling: the outbox and notification queues empty, then a pause")
        results["settle_s"] = await settle(pool, p["settle_s"])
        # The light-load step is compared with floors measured just before it, on the same
        # warm and settled system (at the start, a broker just started still compiles its code).
        say("floors before the light load: MQTT QoS 1, Kafka acks=all, Postgres commit, each alone")
        results["floors"] = await measure_floors(settings, p["floor_n"])
        say(f"light load: {light}/s from {len(fleet.clients)} devices")
        results["light_load"] = await run_step(
            ctx, rate=light, duration=p["light_s"], tag=f"light{tag}", drain_s=p["drain_s"], stages=True
        )

        say("heartbeats (device health only, no incident)")
        hb_steps: list[dict[str, Any]] = []

        async def heartbeats_held(rate: float) -> bool:
            hb_steps.append(await heartbeat_step(ctx, p, int(rate), f"hb{int(rate)}x{tag}"))
            return bool(hb_steps[-1]["held"])

        hb_best = await highest_held(
            heartbeats_held,
            (2500, 5000, 10000, 20000, 40000),
            refine=REFINE_STEPS,
            before_refine=lambda: quiet(pool, hb_steps[-1]),
        )
        results["heartbeats"] = {"steps": hb_steps, "max_sustained_per_s": hb_best}

        burst_rate = 3 * max_rate
        say(f"burst: {burst_rate:.0f}/s for {p['burst_s']} s")
        burst_tag = f"burst{tag}"
        burst = await run_step(
            ctx, rate=burst_rate, duration=p["burst_s"], tag=burst_tag, drain_s=max(120, 4 * p["burst_s"])
        )
        burst["order_kept_per_device"] = await order_kept(pool, burst_tag)
        results["burst"] = burst
        say(
            f"  lost {burst['lost']}, drained {burst['drain_s']} s after the burst, order kept "
            f"{burst['order_kept_per_device']}, worst {burst['press_to_notification_ms']['max']} ms"
        )

        say(f"connections: {p['connections']} devices connected, heartbeats every 30 s, alarms at {light}/s")
        results["connections"] = await connections(settings, ctx, p, light)
    finally:
        await resolver.stop()
        results["resolver"] = resolver.cost()  # the simulated officers' own load on Postgres
        await probe.stop()
        await fleet.close()
        results["components_alive_at_end"] = comps.alive()
        comps.stop()
        await discard_gateway_session(settings)
        await pool.close()
        # This run's topics go now, not at the start of the next run, where the broker's
        # deleting them would run beside that run's measurements.
        await harness.drop_old_kafka(settings.kafka_bootstrap, "pingan-bench")
    return results


def freeze_generator() -> None:
    """The load generator's own pauses would count as the system's latency: with its fleet of
    clients (8,000 of them, each with its protocol, buffers and futures), a full collection of
    the generator took up to 170 ms (gc callbacks, one step at 70/s), and the pages that arrived
    meanwhile waited for it. The fleet lives for the whole run: out of the collector's way. And
    its young objects are looked at as seldom as the components' are (see
    dispatch.components.YOUNG_COLLECTION_EVERY)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*YOUNG_COLLECTION_EVERY)


async def measure_floors(settings: Settings, n: int, *, round_trip: bool = False) -> dict[str, Any]:
    floors: dict[str, Any] = {
        "mqtt_qos1_ms": await mqtt_floor(settings, n),
        "kafka_acks_all_ms": await kafka_floor(settings, n),
        "postgres_commit_ms": await postgres_floor(settings, n),
    }
    parts = list(floors.values())
    floors["S_p50_ms"] = round(sum(f["p50"] for f in parts), 2)
    floors["S_p99_ms"] = round(sum(f["p99"] for f in parts), 2)
    say(f"  S(p50) = {floors['S_p50_ms']} ms, S(p99) = {floors['S_p99_ms']} ms")
    if not round_trip:
        return floors
    # Not part of S: what any statement costs, the reason a batch of one alarm is dear. At the
    # start of the run only: the client's share is this process's CPU, and later its fleet of
    # devices is connected here too.
    rt = floors["postgres_round_trip_cpu"] = await postgres_round_trip_cpu(settings, 10 * n)
    say(
        f"  a Postgres round trip: {rt['wall_us']} us, "
        f"CPU {rt['client_cpu_us']} us here + {rt['server_cpu_us']} us in the server"
    )
    return floors


async def alarm_step(ctx: dict[str, Any], p: dict[str, Any], rate: float, tag: str) -> dict[str, Any]:
    step = await run_step(ctx, rate=rate, duration=p["step_s"], tag=tag, drain_s=p["drain_s"])
    step["held"] = held(step)
    say(
        f"  {rate:.0f}/s: achieved {step['achieved_rate']}, lost {step['lost']}, "
        f"p99 {step['press_to_notification_ms']['p99']} ms, drain {step['drain_s']} s, "
        f"cores busy {step['machine_cpu']['busy_cores']} and stolen {step['machine_cpu']['stolen_cores']} -> "
        f"{'held' if step['held'] else 'not held'}"
    )
    return step


async def heartbeat_step(ctx: dict[str, Any], p: dict[str, Any], rate: int, tag: str) -> dict[str, Any]:
    step = await run_step(
        ctx, rate=rate, duration=p["hb_step_s"], tag=tag, type_="device.heartbeat", drain_s=p["drain_s"]
    )
    step["held"] = heartbeats_held_by(step, rate, p["hb_step_s"])
    say(f"  {rate}/s: achieved {step['achieved_rate']}, lost {step['lost']}, drain {step['drain_s']} s")
    return step


async def quiet(pool: asyncpg.Pool[Any], last: dict[str, Any]) -> None:
    """Before a step that follows one not held: wait until that step's backlog is recorded (at
    most two minutes) and the queues are empty, so the next step does not inherit it."""
    tag = last["tag"]

    async def recorded() -> bool:
        if last.get("heartbeats"):
            return await count_recorded(pool, tag, heartbeats=True) >= int(last["acked_by_broker"])
        return await all_recorded(pool, tag, int(last.get("events_after_id", 0)), int(last["acked_by_broker"]))

    # (A heartbeat step's rows are counted by a scan of every step's heartbeats: once a second.)
    await wait_until(recorded, 120, interval=1.0 if last.get("heartbeats") else 0.25)
    await settle(pool, 2)


async def settle(pool: asyncpg.Pool[Any], pause_s: float) -> float:
    """Latency at light load is not measured while the system still digests the overload of
    the step before (the relay's backlog, the vacuum of the tables it filled, the checkpoint its
    WAL started): wait for the queues to be empty and for autovacuum to be done with this
    database (at most a minute each), make a checkpoint, then `pause_s` more."""
    t0 = time.monotonic()

    async def empty() -> bool:
        return not await pool.fetchval(
            "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM notifications WHERE status = 'pending')"
        )

    async def no_vacuum() -> bool:
        return not await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'autovacuum worker' AND datname = current_database()"
        )

    await wait_until(empty, 60)
    vacuum_s = await wait_until(no_vacuum, 60)
    if vacuum_s > 0.3:
        say(f"  waited {vacuum_s:.1f} s for autovacuum")
    # The overload wrote hundreds of MB of WAL, enough to start a checkpoint of its own (one
    # per 0.5 GB here), which then wrote its buffers out during the light-load step in two
    # runs of four. A light load alone starts one every five minutes: finish this one first.
    t = time.monotonic()
    await pool.execute("CHECKPOINT")
    say(f"  checkpoint in {time.monotonic() - t:.1f} s")
    await asyncio.sleep(pause_s)
    return round(time.monotonic() - t0, 1)


async def discard_gateway_session(settings: Settings) -> None:
    """End the run's gateway session now instead of leaving the broker to expire it (see
    core.platform_mqtt.discard_session: Mosquitto 2.0.11 has crashed over such sessions)."""
    if not await discard_session(settings, f"pingan-gw-{settings.instance_id}"):
        say("could not discard the gateway's MQTT session")


async def generator_ceiling(fleet: LeanFleet, duration: float) -> float:
    from schemas import topics

    t0 = time.monotonic()
    futures = []
    i = 0
    while time.monotonic() - t0 < duration:
        for _ in range(200):
            c = fleet.clients[i % len(fleet.clients)]
            i += 1
            futures.append(c.publish(topics.device_status(c.client_id.removeprefix("bench-")), b"online"))
        if len(futures) > 5000:
            await asyncio.gather(*futures, return_exceptions=True)
            futures = []
        await asyncio.sleep(0)
    await asyncio.gather(*futures, return_exceptions=True)
    return round(i / (time.monotonic() - t0), 1)


async def connections(settings: Settings, ctx: dict[str, Any], p: dict[str, Any], light: float) -> dict[str, Any]:
    extra_ids = [f"b{i:06d}" for i in range(p["fleet"], max(p["fleet"], p["connections"]))]
    extra = LeanFleet(settings, extra_ids, DEVICE_PASSWORD, receipts=False)
    connect_s = await extra.connect()
    freeze_generator()
    connected = len(extra.clients) + len(ctx["fleet"].clients)

    fleets = [f for f in (ctx["fleet"], extra) if f.clients]

    async def heartbeats() -> None:
        """Every connected device sends a heartbeat every 30 s."""
        while True:
            t = time.monotonic()
            for f in fleets:
                for _ in range(max(1, len(f.clients) // 30)):
                    f.press("device.heartbeat", "conn-hb")
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t)))

    hb = asyncio.create_task(heartbeats(), name="bench.heartbeats")
    try:
        step = await run_step(
            ctx, rate=light, duration=p["conn_s"], tag=f"conn{uuid.uuid4().hex[:6]}", drain_s=p["drain_s"]
        )
    finally:
        hb.cancel()
        await asyncio.gather(hb, return_exceptions=True)
        await extra.close()
    return {"devices_connected": connected, "connect_s": round(connect_s, 2), "alarms_meanwhile": step}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = Path("/proc/meminfo").read_text().split()[1] if Path("/proc/meminfo").exists() else "0"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(int(mem) / 2**20, 1),
        "python": sys.version.split()[0],
    }


def table(r: dict[str, Any]) -> str:
    f = r["floors"]
    f0 = r.get("floors_at_start", f)
    light = r["light_load"]
    n = light["press_to_notification_ms"]
    rc = light["press_to_receipt_ms"]
    maxr = r["max_rate"]["max_sustained_per_s"]
    rows = [
        ("floor MQTT QoS 1 p50/p99 ms", f"{f['mqtt_qos1_ms']['p50']} / {f['mqtt_qos1_ms']['p99']}"),
        ("floor Kafka acks=all p50/p99 ms", f"{f['kafka_acks_all_ms']['p50']} / {f['kafka_acks_all_ms']['p99']}"),
        ("floor Postgres commit p50/p99 ms", f"{f['postgres_commit_ms']['p50']} / {f['postgres_commit_ms']['p99']}"),
        ("S p50 / p99 ms (floors measured just before the light load)", f"{f['S_p50_ms']} / {f['S_p99_ms']}"),
        ("  S p50 / p99 ms at the start of the run", f"{f0['S_p50_ms']} / {f0['S_p99_ms']}"),
        (
            "Postgres round trip (SELECT 1): wall / CPU client + server us",
            _round_trip(f0.get("postgres_round_trip_cpu")),
        ),
        (
            f"light load {light['rate']}/s press->notification p50/p99/p99.9/max ms",
            f"{n['p50']} / {n['p99']} / {n['p999']} / {n['max']}",
        ),
        ("  ratio p50 / S(p50)  (goal <= 1.5)", _ratio(n["p50"], f["S_p50_ms"])),
        ("  ratio p99 / S(p99)  (goal <= 2)", _ratio(n["p99"], f["S_p99_ms"])),
        (
            "  p50 ms: press->gateway / ->event row / ->page queued / ->page PUBACK",
            stages_line(light.get("stages_ms")),
        ),
        ("light load press->device receipt p50/p99 ms", f"{rc['p50']} / {rc['p99']}"),
        ("max sustained alarms/s (p99 < 1 s, nothing lost)  (goal 1000, then 5000)", _whole(maxr)),
        ("heartbeats/s sustained  (goal 20000)", _whole(r["heartbeats"]["max_sustained_per_s"])),
        (
            "burst lost / drain s / order kept / worst ms",
            f"{r['burst']['lost']} / {r['burst']['drain_s']} / {r['burst']['order_kept_per_device']} / "
            f"{r['burst']['press_to_notification_ms']['max']}",
        ),
        ("connections held", str(r["connections"]["devices_connected"])),
        (
            "simulated officers closing incidents: closed / Postgres CPU s",
            _resolver_line(r.get("resolver")),
        ),
        ("load generator ceiling publishes/s", str(r["generator_ceiling_per_s"])),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    best = next((s for s in r["max_rate"]["steps"] if s["rate"] == maxr), None)
    if best:
        lines.append(
            "CPU share at the max sustained rate: " + ", ".join(f"{k} {v:.2f}" for k, v in best["cpu_share"].items())
        )
    steps = [s for s in _all_steps(r) if "machine_cpu" in s]
    if steps:
        stolen = [s["machine_cpu"]["stolen_cores"] for s in steps]
        lines.append(
            f"cores stolen by the host during the steps: {min(stolen):.2f}-{max(stolen):.2f} "
            f"(of {r['machine']['cores']}; at the max sustained rate "
            f"{best['machine_cpu']['stolen_cores']:.2f})"
            if best and "machine_cpu" in best
            else f"cores stolen by the host during the steps: {min(stolen):.2f}-{max(stolen):.2f}"
        )
    return "\n".join(lines)


def _all_steps(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured step of a run's results."""
    out = [*r["max_rate"]["steps"], r["light_load"], *r["heartbeats"]["steps"], r["burst"]]
    conn = r.get("connections", {})
    return out + [v for v in conn.values() if isinstance(v, dict) and "machine_cpu" in v]


def _resolver_line(cost: dict[str, Any] | None) -> str:
    if not cost:
        return "-"
    return f"{cost['closed']} / {cost['postgres_cpu_s']}"


def _whole(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0f}"


def _round_trip(rt: dict[str, Any] | None) -> str:
    if rt is None:
        return "-"
    return f"{rt['wall_us']} / {rt['client_cpu_us']} + {rt['server_cpu_us']}"


def _ratio(a: float | None, b: float) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--full", action="store_true", help="the long run (minutes per step)")
    ap.add_argument(
        "--rate",
        type=float,
        default=None,
        help="measure only one step at this rate (no search): for profiling",
    )
    ap.add_argument(
        "--layout",
        choices=["separate", "paired"],
        default="paired",
        help="paired (default): the gateway, and the rest of the alarm path in one process, as on a small "
        "machine (the worker hands its pages to the notifier beside it); separate: one process per component",
    )
    ap.add_argument("--seconds", type=float, default=None, help="how long the --rate step lasts")
    ap.add_argument("--type", default="alarm.panic", help="the event type of --rate (e.g. device.heartbeat)")
    ap.add_argument(
        "--statements",
        action="store_true",
        help="per step, the Postgres statements that took most time (pg_stat_statements; see bench/statements.py)",
    )
    args = ap.parse_args()
    from core.logging import configure

    configure("warning")
    try:
        with harness.one_run_at_a_time(BENCH_STACK, "a benchmark"):
            # The load generator runs on the components' loop (PINGAN_EVENT_LOOP, uvloop by default).
            results = event_loop.run(main_async(args), Settings.from_env().event_loop)
    except harness.StackBusy as exc:
        print(f"benchmark not started: {exc}", file=sys.stderr)
        return 1
    except BenchAborted as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        return 1
    out_dir = REPO / "artifacts" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"results-{results['mode']}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print()
    if "one_step" not in results:
        print(table(results))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The `dispatch` command line, run as a subprocess against the real Postgres, Mosquitto and Kafka.

Nothing here calls the CLI's functions directly: every command is `python -m dispatch.cli ...`
with the module's settings in the environment, exactly as an operator runs it. What a command
did is then checked where it matters: rows in Postgres, the broker's password file, and whether
a real MQTT client can (or can no longer) log in.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from core import db
from core.mosquitto_passwords import verify_password
from core.mqtt import MqttClient, MqttConnectError
from dispatch.cli import parser
from dispatch.credentials import demo_password, login_probe
from schemas import topics
from tests.support.mqtt_clients import event_payload
from tests.support.pipeline import Pipeline
from tests.support.waiting import wait_until

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
GRID = "990102001001001"
COMMUNITY = "990102001001"  # GRID's parent: a unit, but not a grid cell
CLI_TIMEOUT = 60.0
DEMO_DEVICE_ID = r"^dev-[0-9]{15}-[0-9]{3}$"  # dispatch.demo_city's device ids


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Run:
    args: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        try:
            return orjson.loads(self.stdout)
        except orjson.JSONDecodeError as exc:
            raise AssertionError(f"`dispatch {' '.join(self.args)}` stdout is not JSON: {self}") from exc

    def __str__(self) -> str:
        return (
            f"`dispatch {' '.join(self.args)}` exited {self.rc}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


async def dispatch(env: Any, *args: str, extra_env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT) -> Run:
    """Runs `python -m dispatch.cli *args` on the module's settings without blocking the loop."""
    child_env = os.environ | env.settings.to_env() | (extra_env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dispatch.cli",
        *args,
        cwd=REPO,
        env=child_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"`dispatch {' '.join(args)}` still running after {timeout} s\n"
            f"--- stdout\n{out.decode()}\n--- stderr\n{err.decode()}"
        ) from None
    assert proc.returncode is not None
    return Run(tuple(args), proc.returncode, out.decode(), err.decode())


async def ok(env: Any, *args: str, **kw: Any) -> Run:
    r = await dispatch(env, *args, **kw)
    assert r.rc == 0, str(r)
    assert "Traceback" not in r.stderr, str(r)
    return r


async def connect(settings: Any, username: str, password: str, *, within: float = 10.0) -> MqttClient:
    """A connected client. Mosquitto re-reads its password file on SIGHUP in its own time (the CLI
    only sends the signal), so a refusal right after a command is retried for a little while."""
    deadline = time.monotonic() + within
    while True:
        client = login_probe(settings, username, password)
        try:
            await client.start(timeout=5)
            return client
        except MqttConnectError:
            await client.stop()
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.1)


async def refused(settings: Any, username: str, password: str, *, within: float = 10.0) -> MqttConnectError:
    """The broker's refusal of these credentials (waiting, as above, for a reload to take effect)."""
    deadline = time.monotonic() + within
    while True:
        client = login_probe(settings, username, password)
        try:
            await client.start(timeout=5)
        except MqttConnectError as exc:
            await client.stop()
            return exc
        await client.stop()
        if time.monotonic() > deadline:
            raise AssertionError(f"the broker still accepts {username!r} after {within} s")
        await asyncio.sleep(0.1)


def password_file_text(settings: Any) -> str:
    return Path(settings.mqtt_password_file).read_text(encoding="utf-8")


def password_file_entries(settings: Any) -> dict[str, str]:
    entries = {}
    for line in password_file_text(settings).splitlines():
        user, _, hashed = line.partition(":")
        entries[user] = hashed
    return entries


async def device_rows(env: Any) -> str:
    """A fingerprint of the whole devices table: any insert, delete or change shows."""
    return str(
        await env.pool.fetchval("SELECT md5(coalesce(string_agg(d::text, '|' ORDER BY device_id), '')) FROM devices d")
    )


@contextlib.asynccontextmanager
async def empty_database(env: Any) -> AsyncIterator[str]:
    """A database of its own, with nothing in it; yields its DSN."""
    name = f"pingan_test_cli_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(env.admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = env.settings.database_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        admin = await asyncpg.connect(env.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def expected_migrations() -> list[tuple[int, str]]:
    return [(version, name) for version, name, _ in db.migrations()]


# --------------------------------------------------------------------------- migrate


async def test_migrate_twice_on_the_environment_database_applies_nothing(env) -> None:
    first = await ok(env, "migrate")
    second = await ok(env, "migrate")
    # The environment's database was migrated when it was made: nothing is left to apply.
    assert first.stdout.strip() == "migrations applied: 0", str(first)
    assert second.stdout.strip() == "migrations applied: 0", str(second)
    rows = await env.pool.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [(r["version"], r["name"]) for r in rows] == expected_migrations()


async def test_migrate_on_an_empty_database_applies_every_file_once_even_run_concurrently(env) -> None:
    expected = expected_migrations()
    assert expected, "core.db.migrations() found no migration files"
    async with empty_database(env) as dsn:
        over = {"PINGAN_DATABASE_URL": dsn}
        first = await ok(env, "migrate", extra_env=over)
        names = ", ".join(name for _, name in expected)
        assert first.stdout.strip() == f"migrations applied: {len(expected)} ({names})", str(first)
        second = await ok(env, "migrate", extra_env=over)
        assert second.stdout.strip() == "migrations applied: 0", str(second)

        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        finally:
            await conn.close()
        assert [(r["version"], r["name"]) for r in rows] == expected

    # Two migrators racing on a fresh database: each file is applied by exactly one of them.
    async with empty_database(env) as dsn:
        over = {"PINGAN_DATABASE_URL": dsn}
        runs = await asyncio.gather(*(ok(env, "migrate", extra_env=over) for _ in range(2)))
        counts = sorted(int(r.stdout.split(":")[1].split()[0]) for r in runs)
        assert counts == [0, len(expected)], [str(r) for r in runs]
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        finally:
            await conn.close()
        assert [(r["version"], r["name"]) for r in rows] == expected


# --------------------------------------------------------------------------- seed-demo


async def test_seed_demo_again_changes_nothing_and_prints_its_counts(env) -> None:
    async def snapshot() -> dict[str, Any]:
        return {
            table: await env.pool.fetchval(
                f"SELECT count(*)::text || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY {key}), '')) "
                f"FROM {table} t"
            )
            for table, key in (("units", "code"), ("officers", "officer_id"), ("devices", "device_id"))
        }

    before = await snapshot()
    # At info level the command logs: the logs must go to stderr, stdout stays one JSON document.
    run = await ok(env, "seed-demo", extra_env={"PINGAN_LOG_LEVEL": "info"})
    counts = run.json()
    assert await snapshot() == before, "seed-demo on a seeded database changed rows"

    assert set(counts) == {"units", "officers", "devices", "broker_accounts"}, counts
    assert counts["units"] == await env.pool.fetchval("SELECT count(*) FROM units")
    assert counts["officers"] == await env.pool.fetchval("SELECT count(*) FROM officers")
    assert counts["devices"] == await env.pool.fetchval(
        "SELECT count(*) FROM devices WHERE device_id ~ $1", DEMO_DEVICE_ID
    )
    active = await env.pool.fetchval("SELECT count(*) FROM devices WHERE active AND mqtt_password_hash IS NOT NULL")
    assert counts["broker_accounts"] == active + 1  # and the platform's own account
    assert len(password_file_entries(env.settings)) == counts["broker_accounts"]


async def test_demo_city_has_the_documented_shape(env) -> None:
    levels = {r["level"]: r["n"] for r in await env.pool.fetch("SELECT level, count(*) AS n FROM units GROUP BY 1")}
    assert levels["city"] == 1
    assert levels["district"] == 3
    assert levels["grid"] == 36

    demo_devices = await env.pool.fetchval("SELECT count(*) FROM devices WHERE device_id ~ $1", DEMO_DEVICE_ID)
    assert 900 <= demo_devices <= 1100, demo_devices
    # Devices hang off grid cells only.
    misplaced = await env.pool.fetch(
        "SELECT d.device_id, u.level FROM devices d JOIN units u ON u.code = d.grid_code WHERE u.level <> 'grid'"
    )
    assert misplaced == []

    uncovered = await env.pool.fetch(
        """SELECT u.code FROM units u
            WHERE u.level = 'grid'
              AND NOT EXISTS (SELECT 1 FROM officers o
                               WHERE o.unit_code = u.code AND o.role = 'grid_officer' AND o.active
                                 AND EXISTS (SELECT 1 FROM duty_shifts s
                                              WHERE s.officer_id = o.officer_id AND s.during @> now()))"""
    )
    assert [r["code"] for r in uncovered] == [], "grid cells without an on-duty grid officer"

    grids = await env.pool.fetch(
        """SELECT g.code, g.parent_code, p.level AS parent_level
             FROM units g LEFT JOIN units p ON p.code = g.parent_code
            WHERE g.level = 'grid' ORDER BY g.code"""
    )
    for g in grids:
        code = g["code"]
        assert len(code) == 15 and code.isascii() and code.isdigit(), code
        assert g["parent_level"] == "community", dict(g)
        assert code[:12] == g["parent_code"], dict(g)


# --------------------------------------------------------------------------- device add


async def test_device_add_prints_credentials_that_log_in_and_stores_only_a_hash(env) -> None:
    address = "幸福街道春晖社区 3号楼2单元501"
    note = "独居老人，听力差"
    run = await ok(
        env,
        "device", "add", "--grid", GRID, "--kind", "panic_button", "--address", address, "--note", note,
    )  # fmt: skip
    out = run.json()
    device_id = out["device_id"]
    mqtt = out["mqtt"]
    password = mqtt["password"]
    assert device_id.startswith(f"dev-{GRID}-")  # no --id: one is generated
    assert out["grid_code"] == GRID and out["kind"] == "panic_button"
    assert mqtt["username"] == device_id
    assert isinstance(password, str) and len(password) >= 16
    assert mqtt["host"] == env.settings.mqtt_host and mqtt["port"] == env.settings.mqtt_port
    assert mqtt["publish"] == topics.device_events(device_id)
    assert mqtt["receipts"] == topics.device_receipts(device_id)

    # Postgres has the device, and its password only as a mosquitto $7$ hash.
    row = await env.pool.fetchrow("SELECT * FROM devices WHERE device_id = $1", device_id)
    assert row is not None
    assert row["grid_code"] == GRID and row["kind"] == "panic_button"
    assert row["address"] == address and row["resident_note"] == note
    assert row["active"] is True
    hashed = row["mqtt_password_hash"]
    assert hashed.startswith("$7$")
    assert verify_password(password, hashed)
    assert not verify_password(password + "x", hashed)
    assert password not in await env.pool.fetchval(
        "SELECT row_to_json(d)::text FROM devices d WHERE device_id = $1", device_id
    )
    # The broker's password file has the same hash, and not the password.
    assert password_file_entries(env.settings).get(device_id) == hashed
    assert password not in password_file_text(env.settings)

    # The broker reloaded its password file: the device logs in and may publish to its own topic.
    client = await connect(env.settings, device_id, password)
    try:
        body = orjson.dumps(event_payload(device_id))
        await asyncio.wait_for(client.publish(topics.device_events(device_id), body, qos=1), 10)
    finally:
        await client.stop()

    err = await refused(env.settings, device_id, password[::-1])
    assert err.reason_code in (0x86, 0x87), err  # bad user name or password / not authorized
    assert err.retriable is False


BAD_ADDS: dict[str, tuple[list[str], list[str]]] = {
    # case: (arguments after `device add`, what stderr must name)
    "unknown grid": (["--grid", "990102001001999", "--kind", "panic_button"], ["990102001001999"]),
    "community, not a grid cell": (["--grid", COMMUNITY, "--kind", "panic_button"], [COMMUNITY, "community"]),
    "unknown kind": (["--grid", GRID, "--kind", "toaster"], ["toaster", "kind"]),
    "invalid id": (["--grid", GRID, "--kind", "panic_button", "--id", "bad/id"], ["bad/id"]),
    "duplicate id": (
        ["--grid", GRID, "--kind", "panic_button", "--id", f"dev-{GRID}-001"],
        [f"dev-{GRID}-001", "exists"],
    ),
    # The device id is its MQTT user name, and mosquitto's password file cannot hold a ':' in one.
    "id with a colon": (["--grid", GRID, "--kind", "panic_button", "--id", "cam:1"], ["cam:1"]),
    # Nor may a device take the platform's own broker account.
    "the platform's user name": (
        ["--grid", GRID, "--kind", "panic_button", "--id", "pingan-platform"],
        ["pingan-platform"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_ADDS))
async def test_device_add_refuses_bad_input_clearly_and_changes_nothing(env, case: str) -> None:
    args, named = BAD_ADDS[case]
    if case == "the platform's user name":
        assert env.settings.mqtt_username == "pingan-platform"
    before = await device_rows(env)
    run = await dispatch(env, "device", "add", *args)
    assert run.rc != 0, str(run)
    assert "Traceback" not in run.stderr, str(run)
    assert run.stderr.startswith("error: "), str(run)
    for word in named:
        assert word in run.stderr, f"stderr does not name {word!r}\n{run}"
    assert run.stdout == "", str(run)  # no credentials printed for a device that was not added
    assert await device_rows(env) == before, f"devices table changed\n{run}"
    # And the broker's accounts can still be written from Postgres.
    sync = await ok(env, "broker", "sync")
    assert sync.stdout.startswith("broker accounts written: ")


# --------------------------------------------------------------------------- device deactivate


async def test_deactivated_device_can_no_longer_connect(env) -> None:
    device_id = f"cli-deact-{uuid.uuid4().hex[:8]}"
    out = (await ok(env, "device", "add", "--grid", GRID, "--kind", "pendant", "--id", device_id)).json()
    assert out["device_id"] == device_id
    password = out["mqtt"]["password"]
    client = await connect(env.settings, device_id, password)
    await client.stop()

    run = await ok(env, "device", "deactivate", device_id)
    assert device_id in run.stdout
    assert await env.pool.fetchval("SELECT active FROM devices WHERE device_id = $1", device_id) is False
    assert device_id not in password_file_entries(env.settings)
    err = await refused(env.settings, device_id, password)
    assert err.reason_code in (0x86, 0x87), err

    # Only that one: a demo device still logs in.
    other = f"dev-{GRID}-002"
    client = await connect(env.settings, other, demo_password(env.settings, other))
    await client.stop()

    unknown = f"cli-ghost-{uuid.uuid4().hex[:8]}"
    before = await device_rows(env)
    run = await dispatch(env, "device", "deactivate", unknown)
    assert run.rc != 0, str(run)
    assert "Traceback" not in run.stderr and unknown in run.stderr, str(run)
    assert await device_rows(env) == before


# --------------------------------------------------------------------------- status


STATUS_KEYS = {"events_received", "heartbeats_received", "events_rejected", "incidents_open", "notifications_sent"}


def _positive_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


async def test_status_reports_presses_incidents_notifications_and_latency(env) -> None:
    grids = [
        r["code"] for r in await env.pool.fetch("SELECT code FROM units WHERE level = 'grid' ORDER BY code LIMIT 5")
    ]
    assert len(grids) == 5
    tag = uuid.uuid4().hex[:6]
    devices: list[tuple[str, str]] = []
    for n, grid in enumerate(grids):
        out = (
            await ok(env, "device", "add", "--grid", grid, "--kind", "panic_button", "--id", f"cli-st-{tag}-{n}")
        ).json()
        devices.append((out["device_id"], out["mqtt"]["password"]))
    ids = [d for d, _ in devices]

    pipeline = Pipeline(env.settings, env.pool)
    await pipeline.start()
    clients: list[MqttClient] = []
    try:
        clients = [await connect(env.settings, d, p) for d, p in devices]
        await asyncio.gather(
            *(
                asyncio.wait_for(c.publish(topics.device_events(d), orjson.dumps(event_payload(d)), qos=1), 10)
                for c, d in zip(clients, ids, strict=True)
            )
        )

        async def all_notified() -> bool:
            n = await env.pool.fetchval(
                "SELECT count(*) FROM incidents WHERE device_id = ANY($1) AND first_notified_at IS NOT NULL",
                ids,
            )
            return n == len(ids)

        await wait_until(all_notified, timeout=30)
    finally:
        for c in clients:
            await c.stop()
        await pipeline.stop()

    run = await ok(env, "status", "--window", "600")
    s = run.json()
    assert STATUS_KEYS <= set(s), s
    assert s["window_s"] == 600
    for key in STATUS_KEYS:
        assert isinstance(s[key], int) and not isinstance(s[key], bool), (key, s)
    assert s["events_received"] >= 5, s
    assert s["events_rejected"] == 0, s  # every press was valid
    assert s["incidents_open"] >= 5, s
    assert s["notifications_sent"] >= 5, s
    lat = s["press_to_notification_ms"]
    assert lat["incidents"] >= 5, s
    assert _positive_number(lat["p50"]) and _positive_number(lat["p99"]), s
    assert lat["p50"] <= lat["p99"], s


# --------------------------------------------------------------------------- help


def _commands(p: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the parser: ("device",), ("device", "add"), ..."""
    found = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found += _commands(sub, (*prefix, name))
    return found


async def test_help_for_dispatch_and_every_subcommand(env) -> None:
    commands = _commands(parser())
    # The parser is walked, so a new command is covered too; these are the documented ones.
    for expected in [
        ("migrate",), ("seed-demo",), ("status",), ("device",), ("device", "add"),
        ("device", "deactivate"), ("broker",), ("broker", "sync"), ("run",), ("gateway",),
        ("worker",), ("notifier",), ("relay",), ("simulate",), ("demo",),
    ]:  # fmt: skip
        assert expected in commands, expected

    runs = await asyncio.gather(*(dispatch(env, *c, "--help") for c in [(), *commands]))
    for run in runs:
        assert run.rc == 0, str(run)
        assert run.stdout.startswith("usage: dispatch"), str(run)
        assert "Traceback" not in run.stderr, str(run)

    bare = await dispatch(env)
    assert bare.rc == 2, str(bare)  # argparse: a command is required
    assert "usage: dispatch" in bare.stderr and "Traceback" not in bare.stderr, str(bare)

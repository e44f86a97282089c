"""The `dispatch` command line: runs any component, or all of them, and administers."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from core import db, event_loop
from core.errors import PinganError
from core.logging import configure
from core.settings import Settings


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


async def _with_conn(settings: Settings, fn: Callable[[Any], Awaitable[Any]]) -> Any:
    conn = await db.connect(settings.database_url)
    try:
        return await fn(conn)
    finally:
        await conn.close()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = asyncio.run(_with_conn(settings, db.migrate))
    print(f"migrations applied: {len(applied)}" + (f" ({', '.join(applied)})" if applied else ""))
    return 0


def cmd_seed_demo(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch.credentials import sync_broker_credentials
    from dispatch.demo_city import seed

    async def go(conn: Any) -> dict[str, int]:
        counts = await seed(conn, settings)
        counts["broker_accounts"] = await sync_broker_credentials(conn, settings)
        return counts

    _print_json(asyncio.run(_with_conn(settings, go)))
    return 0


def cmd_device_add(args: argparse.Namespace, settings: Settings) -> int:
    import secrets

    from dispatch.credentials import InvalidDevice, add_device, sync_broker_credentials

    device_id = args.id or f"dev-{args.grid}-{secrets.token_hex(3)}"
    if device_id == settings.mqtt_username:
        raise InvalidDevice(f"device id {device_id!r} is the platform's own MQTT account")

    async def go(conn: Any) -> Any:
        # One transaction: the device exists only if its broker account was written too.
        async with conn.transaction():
            p = await add_device(
                conn,
                device_id=device_id,
                grid_code=args.grid,
                kind=args.kind,
                address=args.address,
                resident_note=args.note,
            )
            await sync_broker_credentials(conn, settings)
        return p

    p = asyncio.run(_with_conn(settings, go))
    _print_json(
        {
            "device_id": p.device_id,
            "grid_code": p.grid_code,
            "kind": p.kind,
            "mqtt": {
                "host": settings.mqtt_host,
                "port": settings.mqtt_port,
                "username": p.username,
                "password": p.password,
                "client_id": p.device_id,
                "publish": f"pingan/v1/devices/{p.device_id}/events",
                "receipts": f"pingan/v1/devices/{p.device_id}/receipts",
            },
            "note": "the password is shown once; it is stored only as a hash",
        }
    )
    return 0


def cmd_device_deactivate(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch.credentials import sync_broker_credentials

    async def go(conn: Any) -> int:
        async with conn.transaction():
            n = await conn.fetchval(
                "WITH u AS (UPDATE devices SET active = false WHERE device_id = $1 RETURNING 1) SELECT count(*) FROM u",
                args.device_id,
            )
            await sync_broker_credentials(conn, settings)
        return int(n)

    if not asyncio.run(_with_conn(settings, go)):
        print(f"no device {args.device_id}", file=sys.stderr)
        return 1
    print(f"device {args.device_id} deactivated; its broker account is removed")
    return 0


def cmd_broker_sync(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch.credentials import sync_broker_credentials

    n = asyncio.run(_with_conn(settings, lambda c: sync_broker_credentials(c, settings)))
    print(f"broker accounts written: {n}")
    return 0


def cmd_officer_token(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from core.officer_actions import load_officer
    from core.sessions import issue
    from core.timeutil import utcnow

    async def go(conn: Any) -> str:
        if await load_officer(conn, args.officer_id) is None:
            raise PinganError(f"no active officer {args.officer_id!r}")
        return await issue(conn, args.officer_id, ttl=timedelta(hours=args.hours), now=utcnow())

    token = asyncio.run(_with_conn(settings, go))
    _print_json(
        {
            "officer_id": args.officer_id,
            "token": token,
            "expires_in_hours": args.hours,
            "use": "Authorization: Bearer <token>",
        }
    )
    return 0


def cmd_officer_password(args: argparse.Namespace, settings: Settings) -> int:
    from core.passwords import hash_password
    from dispatch.credentials import new_password

    password = new_password()

    async def go(conn: Any) -> None:
        done = await conn.fetchval(
            "UPDATE officers SET password_hash = $2, password_changed_at = now() "
            "WHERE officer_id = $1 AND active RETURNING true",
            args.officer_id,
            hash_password(password),
        )
        if not done:
            raise PinganError(f"no active officer {args.officer_id!r}")
        # A new password ends the officer's sessions.
        await conn.execute(
            "UPDATE officer_sessions SET revoked_at = now() WHERE officer_id = $1 AND revoked_at IS NULL",
            args.officer_id,
        )

    asyncio.run(_with_conn(settings, go))
    _print_json(
        {
            "officer_id": args.officer_id,
            "password": password,
            "note": "shown once; stored only as an argon2 hash; earlier sessions are signed out",
        }
    )
    return 0


def cmd_officer_mqtt_password(args: argparse.Namespace, settings: Settings) -> int:
    from core.mosquitto_passwords import hash_password
    from dispatch.credentials import new_password, sync_broker_credentials

    password = new_password()

    async def go(conn: Any) -> None:
        async with conn.transaction():
            if await conn.fetchval("SELECT true FROM devices WHERE device_id = $1", args.officer_id):
                raise PinganError(f"{args.officer_id} is a device's id; the broker's user names are shared")
            done = await conn.fetchval(
                "UPDATE officers SET mqtt_password_hash = $2 WHERE officer_id = $1 AND active RETURNING true",
                args.officer_id,
                hash_password(password),
            )
            if not done:
                raise PinganError(f"no active officer {args.officer_id!r}")
            await sync_broker_credentials(conn, settings)

    asyncio.run(_with_conn(settings, go))
    _print_json(
        {
            "officer_id": args.officer_id,
            "mqtt": {
                "host": settings.mqtt_host,
                "port": settings.mqtt_port,
                "username": args.officer_id,
                "password": password,
                "notifications": f"pingan/v1/officers/{args.officer_id}/notifications",
                "actions": f"pingan/v1/officers/{args.officer_id}/actions",
                "results": f"pingan/v1/officers/{args.officer_id}/results",
            },
            "note": "the password is shown once; it is stored only as a hash",
        }
    )
    return 0


def cmd_policy_show(args: argparse.Namespace, settings: Settings) -> int:
    from core.incident_service import IncidentService
    from schemas.topics import KafkaTopics

    service = IncidentService(KafkaTopics(settings.kafka_topic_prefix))

    async def go(conn: Any) -> Any:
        level = await conn.fetchval("SELECT level FROM units WHERE code = $1", args.unit)
        if level is None:
            raise PinganError(f"no unit {args.unit}")
        grid = await conn.fetchval(
            "SELECT code FROM units WHERE level = 'grid' AND $1 = ANY(path) ORDER BY code LIMIT 1", args.unit
        )
        out = {}
        for priority in range(1, 6):
            policy = await service.policy_for(conn, grid, priority) if grid else None
            out[str(priority)] = policy.to_json() if policy else None
        return {"unit": args.unit, "level": level, "in_force_for_its_grid_cells": out}

    _print_json(asyncio.run(_with_conn(settings, go)))
    return 0


def cmd_policy_set(args: argparse.Namespace, settings: Settings) -> int:
    from core.incident_model import LEVELS, Policy

    try:
        acks = [int(x) for x in args.ack.split(",")]
        reminders = None if args.remind in (None, 0) else args.remind
        policy = Policy.from_json(
            {
                "priority": args.priority,
                "cancel_grace_s": args.grace,
                "levels": [
                    {"level": LEVELS[i], "ack_s": a, "arrive_s": args.arrive, "remind_s": reminders}
                    for i, a in enumerate(acks)
                ],
            }
        )
    except (ValueError, IndexError) as exc:
        raise PinganError(f"invalid policy: {exc} (--ack takes 1 to 5 comma-separated seconds, grid first)") from exc

    async def go(conn: Any) -> None:
        if await conn.fetchval("SELECT level FROM units WHERE code = $1", args.unit) is None:
            raise PinganError(f"no unit {args.unit}")
        levels = policy.to_json()["levels"]
        await conn.execute(
            """INSERT INTO escalation_policies (unit_code, priority, levels, cancel_grace_s, updated_by)
               VALUES ($1, $2, $3, $4, 'cli')
               ON CONFLICT (unit_code, priority) DO UPDATE
                  SET levels = EXCLUDED.levels, cancel_grace_s = EXCLUDED.cancel_grace_s,
                      updated_at = clock_timestamp(), updated_by = 'cli'""",
            args.unit,
            args.priority,
            levels,
            args.grace,
        )

    asyncio.run(_with_conn(settings, go))
    print(f"policy for unit {args.unit}, priority {args.priority} saved; incidents opened from now on use it")
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from core.timeutil import utcnow
    from dispatch.stats import response_times

    now = utcnow()

    async def go(conn: Any) -> Any:
        try:
            return await response_times(conn, args.unit, now - timedelta(days=args.days), now)
        except LookupError as exc:
            raise PinganError(f"no unit {args.unit}") from exc

    _print_json(asyncio.run(_with_conn(settings, go)))
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch.status import status

    _print_json(asyncio.run(_with_conn(settings, lambda c: status(c, window_s=args.window))))
    return 0


def cmd_component(names: tuple[str, ...]) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        from dispatch.components import run_components

        event_loop.run(run_components(names, settings), settings.event_loop)
        return 0

    return run


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch.components import ALL

    unknown = [n for n in args.components if n not in ALL]
    if unknown:
        raise PinganError(f"unknown component {', '.join(unknown)}: choose from {', '.join(ALL)}")
    names = tuple(dict.fromkeys(args.components)) or ALL
    return cmd_component(names)(args, settings)


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch.simulator import Simulator, load_demo_devices

    async def go() -> Any:
        devices = await _with_conn(settings, lambda c: load_demo_devices(c, settings, args.devices))
        if not devices:
            raise PinganError("no demo devices: run `dispatch seed-demo` first")
        sim = Simulator(settings, devices, rate=args.rate, heartbeat_share=args.heartbeats)
        stop = asyncio.Event()
        from core.lifecycle import install_signal_handlers

        install_signal_handlers(stop)
        stats = await sim.run(duration=args.duration, stop=stop)
        return stats.summary()

    _print_json(event_loop.run(go(), settings.event_loop))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from dispatch.demo import run_demo

    event_loop.run(run_demo(settings, devices=args.devices, rate=args.rate), settings.event_loop)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dispatch", description="Ping'an Dispatch: one-tap alarm and incident dispatch")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")

    for name, help_ in [
        ("gateway", "run the MQTT gateway (device events -> Kafka)"),
        ("worker", "run the escalation worker (Kafka -> Postgres incidents, notifications)"),
        ("notifier", "run the notifier (notifications -> officer apps over MQTT)"),
        ("relay", "run the outbox relay (incident updates -> Kafka, receipts -> devices)"),
        ("timer", "run the escalation timer (reminders and escalation when deadlines pass)"),
        ("api", "run the HTTP API (incidents, officer actions, statistics)"),
        ("officer-actions", "run the officer-app gateway (actions over MQTT)"),
        ("ingest", "run the HTTP ingest for integrators (device events over HTTP)"),
    ]:
        sp = sub.add_parser(name, help=help_)
        sp.set_defaults(fn=cmd_component((name,)))
    from dispatch.components import ALL

    sp = sub.add_parser("run", help="run every component (or the ones named) in one process")
    sp.add_argument(
        "components",
        nargs="*",
        metavar="component",
        help=f"some of: {', '.join(ALL)} (default: all of them)",
    )
    sp.set_defaults(fn=cmd_run)

    sub.add_parser("migrate", help="apply database migrations (safe to re-run)").set_defaults(fn=cmd_migrate)
    sub.add_parser("seed-demo", help="load the demo city (units, officers, ~1000 devices)").set_defaults(
        fn=cmd_seed_demo
    )

    sp = sub.add_parser("simulate", help="connect demo devices and press buttons")
    sp.add_argument("--devices", type=int, default=200, help="devices to connect (default 200)")
    sp.add_argument("--rate", type=float, default=2.0, help="presses per second (default 2)")
    sp.add_argument("--duration", type=float, default=None, help="seconds (default: until Ctrl-C)")
    sp.add_argument("--heartbeats", type=float, default=0.0, help="share of heartbeats (0-1)")
    sp.set_defaults(fn=cmd_simulate)

    sp = sub.add_parser("demo", help="run everything with a simulator and a live summary")
    sp.add_argument("--devices", type=int, default=200)
    sp.add_argument("--rate", type=float, default=2.0)
    sp.set_defaults(fn=cmd_demo)

    sp = sub.add_parser("status", help="print recent activity as JSON (from Postgres)")
    sp.add_argument("--window", type=int, default=300, help="seconds to look back (default 300)")
    sp.set_defaults(fn=cmd_status)

    dev = sub.add_parser("device", help="provision devices").add_subparsers(
        dest="device_command", required=True, metavar="action"
    )
    sp = dev.add_parser("add", help="add a device to a grid cell; prints its MQTT credentials once")
    sp.add_argument("--grid", required=True, help="15-digit grid cell code")
    sp.add_argument("--kind", required=True, help="panic_button, pendant, smoke_detector, ...")
    sp.add_argument("--id", help="device id (default: generated)")
    sp.add_argument("--address", default="")
    sp.add_argument("--note", default="", help="resident notes shown to officers")
    sp.set_defaults(fn=cmd_device_add)
    sp = dev.add_parser("deactivate", help="deactivate a device and remove its broker account")
    sp.add_argument("device_id")
    sp.set_defaults(fn=cmd_device_deactivate)

    off = sub.add_parser("officer", help="officer credentials").add_subparsers(
        dest="officer_command", required=True, metavar="action"
    )
    sp = off.add_parser("token", help="issue an API bearer token for an officer (printed once)")
    sp.add_argument("officer_id")
    sp.add_argument("--hours", type=float, default=12.0, help="lifetime (default 12 h)")
    sp.set_defaults(fn=cmd_officer_token)
    sp = off.add_parser("password", help="set an officer's duty-desk password (generated and printed once)")
    sp.add_argument("officer_id")
    sp.set_defaults(fn=cmd_officer_password)
    sp = off.add_parser("mqtt-password", help="set the officer app's MQTT password (printed once)")
    sp.add_argument("officer_id")
    sp.set_defaults(fn=cmd_officer_mqtt_password)

    pol = sub.add_parser("policy", help="escalation policies per unit and priority").add_subparsers(
        dest="policy_command", required=True, metavar="action"
    )
    sp = pol.add_parser("show", help="the policies in force for a unit's grid cells (JSON)")
    sp.add_argument("--unit", required=True)
    sp.set_defaults(fn=cmd_policy_show)
    sp = pol.add_parser("set", help="set a unit's policy for one priority (its subtree inherits it)")
    sp.add_argument("--unit", required=True)
    sp.add_argument("--priority", type=int, required=True, choices=range(1, 6))
    sp.add_argument("--ack", required=True, help="seconds to acknowledge per level, grid first: 60,60,90,120,120")
    sp.add_argument("--arrive", type=int, default=600, help="seconds from acknowledgement to on scene (default 600)")
    sp.add_argument("--remind", type=int, default=None, help="reminder interval in seconds (default none)")
    sp.add_argument("--grace", type=int, default=120, help="seconds a resident may cancel (default 120)")
    sp.set_defaults(fn=cmd_policy_set)

    sp = sub.add_parser("stats", help="response times and resolution rate of a unit (JSON)")
    sp.add_argument("--unit", default="990100", help="unit code (default: the demo city)")
    sp.add_argument("--days", type=float, default=7.0, help="period: the last N days (default 7)")
    sp.set_defaults(fn=cmd_stats)

    broker = sub.add_parser("broker", help="MQTT broker administration").add_subparsers(
        dest="broker_command", required=True, metavar="action"
    )
    broker.add_parser("sync", help="rewrite the broker's password file from Postgres and reload it").set_defaults(
        fn=cmd_broker_sync
    )
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    args = parser().parse_args(argv)
    settings = Settings.from_env()
    level = settings.log_level
    if args.command in ("demo", "simulate") and "PINGAN_LOG_LEVEL" not in os.environ:
        level = "warning"  # the terminal belongs to the live summary
    configure(level, settings.log_format)
    try:
        rc: int = args.fn(args, settings)
    except PinganError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    raise SystemExit(main())

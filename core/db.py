"""Postgres: the connection pool and the project's own migrations."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import asyncpg
import orjson
import structlog

log = structlog.get_logger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_MIGRATION_LOCK = 0x70696E67  # advisory lock key: one migrator at a time


async def _init_connection(conn: asyncpg.Connection[Any]) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def connect(dsn: str, *, timeout: float = 60.0, command_timeout: float | None = None) -> asyncpg.Connection[Any]:
    """One connection. `timeout` bounds opening it; `command_timeout` (default: none, for
    migrations and other long statements) bounds each statement."""
    conn: asyncpg.Connection[Any] = await asyncpg.connect(dsn, timeout=timeout, command_timeout=command_timeout)
    await _init_connection(conn)
    return conn


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 60.0,
    command_timeout: float | None = None,
    generic_plans: bool = False,
) -> asyncpg.Pool[Any]:
    """A pool. The components pass the settings' timeouts (db_connect_timeout_s,
    db_command_timeout_s), so a dead network path costs them seconds, not for ever.

    `generic_plans`: the server plans each prepared statement once per connection, not on
    every execution. For the alarm path's statements (fixed shapes over arrays of keys) a
    custom plan cost more than the execution: 2 ms of planning for the worker's plan reads of
    a one-alarm batch, against 0.3 ms of execution, on the critical path of every alarm. A
    generic plan is made with the statistics of its time, so on a new, empty database it is a
    poor one (a sequential scan); the server plans it again once (auto)analyze has updated the
    statistics of its tables (autovacuum_naptime is 10 s in the local stack and the compose
    file). Ad-hoc searches (the desk API) keep the server's default."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        server_settings={"plan_cache_mode": "force_generic_plan"} if generic_plans else None,
        timeout=connect_timeout,
        command_timeout=command_timeout,
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection[Any]) -> None:
    """Release a connection to the pool without asyncpg's reset statement (UNLISTEN, CLOSE,
    RESET ALL, unlock advisory locks): one round trip to the server on every release, and
    pooled connections keep no session state to reset. LISTEN runs on connections of their
    own (core.pg_wakeup), advisory locks are transaction-scoped, nothing is SET. asyncpg still
    rolls back a transaction left open before it calls this."""


def _server_error(exc: BaseException) -> bool:
    """An error the server reported on a connection that still works (a constraint, a
    serialization failure), as opposed to a timeout, a broken connection or a cancellation."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, asyncpg.PostgresConnectionError)


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool[Any]) -> AsyncIterator[asyncpg.Connection[Any]]:
    """A connection from the pool. When a statement on it times out, the connection breaks or
    the task is cancelled, the connection is dropped at once: asyncpg would otherwise first
    send a cancel request, then roll back and reset, each over a network path that may answer
    nothing (a blackhole), each waiting up to the command timeout. The server rolls back the
    transaction of a session that ends. The pool's other connections are replaced too."""
    async with pool.acquire() as conn:
        try:
            yield conn
        except BaseException as exc:
            if not _server_error(exc):
                conn.terminate()
                # The pool's idle connections most likely went the same way: replace them on
                # their next use rather than find out by a timeout on each.
                await pool.expire_connections()
            raise


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool[Any]) -> AsyncIterator[asyncpg.Connection[Any]]:
    """`acquire()` in a transaction: committed when the block ends, rolled back when the
    server refused something, the connection dropped on a timeout or a broken connection."""
    async with acquire(pool) as conn:
        tr = conn.transaction()
        await tr.start()
        try:
            yield conn
            await tr.commit()
        except BaseException as exc:
            if _server_error(exc) and not conn.is_closed():
                try:
                    await tr.rollback()
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    conn.terminate()
                    raise exc from None
            raise


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("core.migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return found


async def migrate(conn: asyncpg.Connection[Any]) -> list[str]:
    """Apply the migrations not yet applied; safe to run again and from several processes."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            log.info("migration applied", migration=name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now

"""What the benchmark and the fault suite share: a stack of their own, a fresh database,
timestamped progress lines."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from bench.procs import REPO
from core import kafka
from core.platform_mqtt import platform_client
from core.settings import Settings

STACK_SH = str(REPO / "deploy" / "stack.sh")


def say(msg: str) -> None:
    sys.stdout.write(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {msg}\n")
    sys.stdout.flush()


class StackBusy(Exception):
    """Another run holds this stack."""


@contextlib.contextmanager
def one_run_at_a_time(stack: dict[str, str], what: str) -> Iterator[None]:
    """Hold the stack for this run. A run drops the earlier runs' databases, Kafka topics and
    groups, at its start and at its end: a second run on the same stack would delete the first
    one's topics and database under it (and the first would report the events in them as
    lost). The lock goes with the process, however it ends."""
    stack_dir = Path(stack["PINGAN_STACK_DIR"])
    stack_dir.mkdir(parents=True, exist_ok=True)
    with open(stack_dir / "run.lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise StackBusy(f"{stack_dir} is in use by {holder}; wait for it to end") from None
        f.seek(0)
        f.truncate()
        f.write(f"{what} (pid {os.getpid()})\n")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def stack_env(stack: dict[str, str]) -> dict[str, str]:
    """Bring up the stack named by `stack` (PINGAN_STACK_DIR and ports) and return the
    environment with its PINGAN_* settings."""
    env = dict(os.environ)
    env.update(stack)
    subprocess.run([STACK_SH, "up"], env=env, check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run([STACK_SH, "env"], env=env, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export ") :].split("=", 1)
            env[k] = v.strip("'\"")
    return env


async def fresh_database(admin_dsn: str, prefix: str, tag: str) -> str:
    """Drop the earlier `<prefix>_*` databases, create `<prefix>_<tag>`; returns its DSN."""
    name = f"{prefix}_{tag}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        for old in await admin.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", prefix + "\\_%"):
            await admin.execute(f'DROP DATABASE IF EXISTS "{old["datname"]}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return admin_dsn.rsplit("/", 1)[0] + "/" + name


async def broker_store(settings: Settings, timeout: float = 5.0) -> dict[str, int]:
    """What the broker holds at the start of a run, from its $SYS topics (retained): messages
    stored and sessions kept for clients that are away. Sessions left by earlier runs (before
    they were discarded at the end) keep a copy of every device event, and a broker holding
    them saves and loads all of it at each restart. A figure the broker has not published
    (Mosquitto 2.0.11 left the count of away sessions out on a fresh broker) is left out."""
    wanted = {
        "$SYS/broker/store/messages/count": "stored_messages",
        "$SYS/broker/clients/disconnected": "away_sessions",
    }
    got: dict[str, int] = {}
    client = platform_client(settings, client_id=f"pingan-store-check-{os.getpid()}", name="harness.store")
    await client.start(timeout=timeout)
    try:
        for topic in wanted:
            await client.subscribe(topic, qos=0)
        messages = client.messages().__aiter__()
        async with asyncio.timeout(timeout):
            while len(got) < len(wanted):
                msg = await messages.__anext__()
                if msg.topic in wanted:
                    got[wanted[msg.topic]] = int(msg.payload)
    except TimeoutError:
        pass  # what came is reported
    finally:
        await client.stop()
    return got


async def drop_old_kafka(bootstrap: str, prefix: str) -> None:
    """Delete the earlier runs' topics and consumer groups named `<prefix>-*`: every run makes its
    own, and a broker loads all it holds before it serves (thousands of old partitions made it
    start slowly). A deleted topic's offsets go, but its group stays known to the broker until
    the group itself is deleted or expires."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="pingan-cleanup", request_timeout_ms=30000)
    await admin.start()
    try:
        old_topics = [t for t in await admin.list_topics() if t.startswith(prefix + "-")]
        for i in range(0, len(old_topics), 100):
            await admin.delete_topics(old_topics[i : i + 100], timeout_ms=30000)
        if old_topics:
            say(f"deleted {len(old_topics)} Kafka topics of {prefix} runs")
        groups = {str(g[0]) for g in await admin.list_consumer_groups()}
        old_groups = sorted(g for g in groups if g.startswith(prefix + "-"))
        codes = await kafka.delete_consumer_groups(admin, old_groups)
        deleted = sum(1 for c in codes.values() if c == 0)
        if old_groups:
            say(f"deleted {deleted} of {len(old_groups)} Kafka consumer groups of {prefix} runs")
    finally:
        await admin.close()

"""Floors, each alone: what one MQTT QoS 1 hop, one Kafka acks=all hop and one Postgres
commit cost on this machine. The alarm path is judged against their sum."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.stats import summary
from core.mqtt import MqttClient
from core.settings import Settings


async def mqtt_floor(settings: Settings, n: int) -> dict[str, Any]:
    topic = f"pingan/v1/bench/{uuid.uuid4().hex[:8]}"
    pub = MqttClient(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=f"bench-pub-{uuid.uuid4().hex[:6]}",
        username=settings.mqtt_username,
        password=settings.mqtt_password,
    )
    sub = MqttClient(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=f"bench-sub-{uuid.uuid4().hex[:6]}",
        username=settings.mqtt_username,
        password=settings.mqtt_password,
    )
    await pub.start()
    await sub.start()
    try:
        await sub.subscribe(topic, qos=1)
        it = sub.messages().__aiter__()
        lat = []
        for i in range(n):
            t0 = time.monotonic()
            await pub.publish(topic, str(i).encode(), qos=1)
            msg = await asyncio.wait_for(it.__anext__(), 5)
            lat.append((msg.received_monotonic - t0) * 1000)
        return summary(lat)
    finally:
        await pub.stop()
        await sub.stop()


async def kafka_floor(settings: Settings, n: int) -> dict[str, Any]:
    topic = f"{settings.kafka_topic_prefix}.bench-floor"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
    )
    await producer.start()
    await consumer.start()
    try:
        while not consumer.assignment():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for tp in consumer.assignment():
            await consumer.seek_to_end(tp)
        await consumer.getmany(timeout_ms=100)
        lat = []
        for i in range(n):
            t0 = time.monotonic()
            await producer.send_and_wait(topic, str(i).encode())
            got = False
            while not got:
                batch = await consumer.getmany(timeout_ms=1000)
                got = any(recs for recs in batch.values())
            lat.append((time.monotonic() - t0) * 1000)
        return summary(lat)
    finally:
        await producer.stop()
        await consumer.stop()


async def postgres_floor(settings: Settings, n: int) -> dict[str, Any]:
    """One insert and its commit, durable as the alarm path's are: into an ordinary table, so
    the commit waits for its WAL to reach the disk (a temporary table's commit writes no WAL;
    measured here, 0.44 ms against 1.14 ms a commit)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_floor")
        await conn.execute("CREATE TABLE bench_floor (id bigserial PRIMARY KEY, v text)")
        lat = []
        for i in range(n):
            t0 = time.monotonic()
            await conn.execute("INSERT INTO bench_floor (v) VALUES ($1)", str(i))  # autocommit: one commit
            lat.append((time.monotonic() - t0) * 1000)
        await conn.execute("DROP TABLE bench_floor")
        return summary(lat)
    finally:
        await conn.close()


def _process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process on this machine (None where /proc has no such process)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def postgres_round_trip_cpu(settings: Settings, n: int) -> dict[str, Any]:
    """What one round trip to Postgres (`SELECT 1`, no commit) costs in CPU, on each side: the
    fixed price of every statement of the alarm path, whatever it does. The server's share is
    read from its backend's /proc entry, so only where Postgres runs on this machine."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        for _ in range(50):
            await conn.fetchval("SELECT 1")
        server0, client0, t0 = _process_cpu_s(backend), time.process_time(), time.monotonic()
        for _ in range(n):
            await conn.fetchval("SELECT 1")
        server1, client1, t1 = _process_cpu_s(backend), time.process_time(), time.monotonic()
        return {
            "n": n,
            "wall_us": round((t1 - t0) / n * 1e6),
            "client_cpu_us": round((client1 - client0) / n * 1e6),
            "server_cpu_us": None if server0 is None or server1 is None else round((server1 - server0) / n * 1e6),
        }
    finally:
        await conn.close()

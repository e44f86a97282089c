"""A throw-away environment on the test stack: database, Kafka prefix, groups."""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from core import db, kafka
from core.platform_mqtt import discard_session
from core.settings import Settings
from dispatch.credentials import Provisioned, add_device, sync_broker_credentials, wait_broker_accepts
from dispatch.demo_city import seed


def _dsn_with_db(dsn: str, name: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{name}"


@dataclass
class TestEnvironment:
    settings: Settings
    pool: asyncpg.Pool[Any]
    admin_dsn: str
    db_name: str

    @classmethod
    async def create(cls, base: Settings) -> TestEnvironment:
        tag = uuid.uuid4().hex[:10]
        db_name = f"pingan_test_{tag}"
        admin = await asyncpg.connect(base.database_url)
        try:
            await admin.execute(f'CREATE DATABASE "{db_name}"')
        finally:
            await admin.close()
        settings = base.replace(
            database_url=_dsn_with_db(base.database_url, db_name),
            kafka_topic_prefix=f"pingan-test-{tag}",
            kafka_consumer_group=f"pingan-test-workers-{tag}",
            kafka_partitions=3,
            mqtt_session_expiry_s=60,
            instance_id=f"test-{tag}",
            poll_interval_s=0.5,
            http_port=0,
            ingest_port=0,
        )
        conn = await db.connect(settings.database_url)
        try:
            await db.migrate(conn)
            await seed(conn, settings)
            await sync_broker_credentials(conn, settings)
        finally:
            await conn.close()
        pool = await db.create_pool(settings.database_url, min_size=1, max_size=10)
        return cls(settings, pool, base.database_url, db_name)

    async def add_device(self, grid_code: str = "990102001001001", kind: str = "panic_button") -> Provisioned:
        device_id = f"t-{uuid.uuid4().hex[:12]}"
        async with self.pool.acquire() as conn:
            p = await add_device(conn, device_id=device_id, grid_code=grid_code, kind=kind, address="测试楼 1-101")
            await sync_broker_credentials(conn, self.settings)
        await self.broker_knows(device_id, p.password)
        return p

    async def broker_knows(self, username: str, password: str, timeout: float = 15.0) -> None:
        """Wait until the broker has reloaded its password file and takes this account (a test
        that connects at once would otherwise race the reload on a busy machine)."""
        await wait_broker_accepts(self.settings, username, password, timeout=timeout)

    async def _drop_topics(self) -> None:
        """The module's Kafka topics and consumer groups go too: a broker holding the partitions
        of thousands of earlier modules took minutes to start on a developer's test stack, and
        it loads every group it knows at start as well."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap, request_timeout_ms=30000)
        try:
            await admin.start()
            mine = [t for t in await admin.list_topics() if t.startswith(self.settings.kafka_topic_prefix + ".")]
            if mine:
                await admin.delete_topics(mine, timeout_ms=30000)
            group = self.settings.kafka_consumer_group
            known = {str(g[0]) for g in await admin.list_consumer_groups()}
            await kafka.delete_consumer_groups(admin, sorted(known & {group, group + "-dlq"}))
        except Exception as exc:  # noqa: BLE001 - the tests ran; only the clean-up failed
            warnings.warn(f"the module's Kafka topics and groups were not deleted: {exc!r}", stacklevel=1)
        finally:
            await admin.close()

    async def close(self) -> None:
        # The module's gateways are gone for good: their persistent MQTT sessions go too, or
        # Mosquitto 2.0.11 may crash on the next password reload (core.platform_mqtt).
        for client_id in (f"pingan-gw-{self.settings.instance_id}", f"pingan-actions-{self.settings.instance_id}"):
            await discard_session(self.settings, client_id, timeout=5)
        await self._drop_topics()
        await self.pool.close()
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        finally:
            await admin.close()

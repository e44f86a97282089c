"""Kafka plumbing: producers and consumers set for the alarm path, and topic creation."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from core.settings import Settings
from schemas.topics import KafkaTopics

log = structlog.get_logger(__name__)


def topics(settings: Settings) -> KafkaTopics:
    return KafkaTopics(prefix=settings.kafka_topic_prefix)


def producer(settings: Settings, *, client_id: str) -> AIOKafkaProducer:
    """An idempotent producer: acks from all in-sync replicas, no duplicates on retry, order
    kept per partition. Linger is a few milliseconds: alarms are latency-bound."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.kafka_linger_ms,
        max_batch_size=256 * 1024,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        retry_backoff_ms=100,
    )


def consumer(settings: Settings, *topic_names: str, group_id: str, client_id: str) -> AIOKafkaConsumer:
    """A consumer in a group that commits offsets itself, only after the work is durable."""
    return AIOKafkaConsumer(
        *topic_names,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_records=settings.worker_batch_max,
        session_timeout_ms=10000,
        heartbeat_interval_ms=3000,
        max_poll_interval_ms=300000,
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )


async def ensure_topics(settings: Settings, *, timeout: float = 60.0) -> None:
    """Create the project's topics if they are missing (idempotent)."""
    names = topics(settings).all()
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id="pingan-admin",
            request_timeout_ms=settings.kafka_request_timeout_ms,
        )
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                new = [
                    NewTopic(
                        name=n,
                        num_partitions=settings.kafka_partitions,
                        replication_factor=settings.kafka_replication,
                        topic_configs=_topic_configs(settings),
                    )
                    for n in missing
                ]
                try:
                    await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
                log.info("kafka topics created", topics=missing)
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("kafka not reachable yet, retrying", bootstrap=settings.kafka_bootstrap)
            await asyncio.sleep(1.0)
        finally:
            await admin.close()


def _topic_configs(settings: Settings) -> dict[str, Any]:
    configs: dict[str, Any] = {"retention.ms": str(7 * 24 * 3600 * 1000)}
    if settings.kafka_replication >= 3:
        configs["min.insync.replicas"] = "2"
    return configs

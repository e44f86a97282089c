"""All settings, from environment variables, in one typed object.

Every variable is prefixed `PINGAN_`; the README lists them. Defaults match the local stack
started by `deploy/stack.sh up`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_stack_dir() -> str:
    return str(REPO_ROOT / ".stack")


@dataclass(frozen=True, slots=True)
class Settings:
    # Postgres
    database_url: str = "postgresql://pingan:pingan@127.0.0.1:55432/pingan"
    db_pool_min: int = 1
    db_pool_max: int = 10
    db_connect_timeout_s: float = 3.0
    """Give up opening a Postgres connection after this long (and try again): without it a
    connection opened into a dead network path waits a minute."""
    db_command_timeout_s: float = 5.0
    """Give up a statement of the components after this long (the connection is dropped and
    the work retried): without it a statement sent into a dead network path, which nothing
    ever answers or resets, waits for ever and its component with it."""

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_topic_prefix: str = "pingan"
    kafka_partitions: int = 6
    kafka_replication: int = 1
    kafka_consumer_group: str = "pingan-escalation-workers"
    kafka_linger_ms: int = 0
    """How long a producer waits to fill a batch before it sends. 0: an alarm leaves at once;
    under load the records that arrive while a request is in flight still go in one batch.
    Measured with `bench.run --rate`: 2 ms cost 3.6 ms at the median at 51 alarms/s (press to
    page 15.1 ms against 11.5 ms), and at 759/s the step held with 0 and did not with 2."""
    kafka_health_linger_ms: int = 20
    """How long a gateway gathers accepted heartbeats before it hands them to Kafka, one batch
    per partition. Heartbeats are not latency-bound (only their PUBACK waits), and a Kafka
    request costs the broker and the gateway far more than a record in it: with 10 ms instead
    of 0, 4,000 heartbeats/s drained in 3 s instead of 10 (`bench.run --rate 4000 --type
    device.heartbeat`). Alarms, cancels, maintenance events and rejections go at once, record
    by record (kafka_linger_ms)."""
    kafka_request_timeout_ms: int = 10000
    """A request to a Kafka broker not answered within this long is given up, its connection
    closed and the request sent again. A connection into a dead network path (nothing
    answers, nothing resets) is found out only this way: the longer it is, the longer a
    cut-off producer or consumer hangs after the network is back."""
    kafka_fetch_max_wait_ms: int = 500
    """How long the broker holds a fetch that found nothing new. It answers as soon as a record
    arrives (fetch.min.bytes is 1), so this is not the latency of the hop: in the benchmark,
    500 and 10 gave the same press-to-notification figures at 50 and 150 alarms/s, and 10 cost
    about 0.3 of a core of idle polling (worker and broker) with no traffic at all."""

    # MQTT broker
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 18830
    mqtt_username: str = "pingan-platform"
    mqtt_password: str = "pingan-platform-dev"
    mqtt_password_file: str = field(default_factory=lambda: str(Path(_default_stack_dir()) / "mosquitto" / "passwd"))
    mqtt_pid_file: str = field(default_factory=lambda: str(Path(_default_stack_dir()) / "mosquitto" / "mosquitto.pid"))
    mqtt_session_expiry_s: int = 7 * 24 * 3600
    mqtt_max_inflight: int = 1000
    """How many QoS 1 messages a platform connection (the gateways' receipts, the notifier's
    pages) has unacknowledged at the broker before it queues the next; never more than the
    broker's Receive Maximum (deploy/'s Mosquitto: 1,000). paho's window was 100 before: in a
    burst where the broker was slow to answer, the gateway's paho had 65,535 receipts waiting
    behind it and dropped the rest."""
    mqtt_shared_group: str = ""
    """Empty (the default): each gateway holds a plain persistent subscription, which
    Mosquitto 2.0 keeps across a broker restart. A group name: gateways share one
    subscription ($share/<group>/...) to spread the load; Mosquitto 2.0.11 does not restore a
    shared subscription after a restart, and until the gateways reconnect it answers devices
    "no matching subscribers" and drops their events, so use it with a broker that keeps
    shared subscriptions (EMQX, VerneMQ)."""

    # Components
    instance_id: str = field(default_factory=socket.gethostname)
    """Stable per running instance: the gateway's MQTT client id is derived from it, so a
    restarted gateway gets back its session and the messages it had not acknowledged."""
    max_clock_skew_future_s: int = 300
    max_event_age_s: int = 24 * 3600
    """An event whose occurred_at is further ahead or older than these is still accepted, but
    flagged with its clock offset, and the platform's receive time stands in for it."""
    device_rate_per_s: float = 10.0
    """Events a device may send a second on average, per gateway (0 turns the limit off)."""
    device_burst: int = 30
    """Events a device may send at once above its rate."""
    alarm_min_interval_s: float = 1.0
    """Beyond its rate a device still gets one alarm (and one cancel) of each type through
    this often; its heartbeats and maintenance events are refused (reason rate_limited)."""
    device_cache_ttl_s: float = 300.0
    """How long a gateway trusts a cached device lookup. A change that matters (deactivated,
    new password, moved, deleted) reaches the gateways at once through NOTIFY pingan_devices,
    and a gateway whose listening connection was lost drops its whole cache; this only bounds
    a change missed anyway. Longer means fewer registry reads on the alarm path: a panic
    button presses rarely, and with 30 s most presses paid a lookup before Kafka."""
    device_mirror: bool = True
    """A gateway reads the whole device registry into its cache at start and again before the
    entries run out (every 0.8 × device_cache_ttl_s), so a press pays no registry lookup. The
    cache holds 200,000 devices; beyond that the rest are looked up on demand."""
    worker_batch_max: int = 500
    notifier_batch_max: int = 200
    notifier_handover_lease_s: float = 5.0
    """A worker hands the notifications of the incidents it opened to the notifier in its own
    process, which pages the officers without claiming the rows first; the other notifiers
    leave those rows alone for this long. Should the process die before it recorded them as
    sent, they page the officers after it (an officer app may then see a page twice, and drops
    the repeat by its notification_id)."""
    poll_interval_s: float = 1.0
    relay_linger_ms: int = 20
    """After a wake-up the outbox relay waits this long for more rows before it claims, so
    that under load it publishes batches instead of a row or two per transaction. Its records
    (live-queue updates, "incident opened" receipts) are not on the path to the officer."""
    timer_interval_s: float = 0.5
    """How often the escalation timer looks for due deadlines (lateness is at most this)."""
    correlation_window_s: int = 120
    correlation_threshold: int = 4
    """Distinct devices of one building (or grid cell) alarming within the window that form
    one major incident."""
    session_ttl_h: float = 12.0
    cookie_secure: bool = False
    """Mark the session cookie Secure: set it when the desk is served over TLS."""
    device_offline_after_s: int = 600
    """A device not heard from for this long is shown offline."""
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    ingest_port: int = 8081
    """HTTP ingest for integrators (device events over HTTP)."""

    # Demo and simulation
    demo_secret: str = "pingan-demo"
    """Demo devices' MQTT passwords are derived from this, so the simulator can log in."""

    event_loop: str = "uvloop"
    """The event loop of the long-running processes: uvloop (the default), or asyncio (the
    standard library's). See core/event_loop.py."""

    log_level: str = "info"
    log_format: str = "console"  # console or json

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = "PINGAN_" + f.name.upper()
            if key in env:
                values[f.name] = _parse(key, env[key], hints[f.name])
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """These settings as PINGAN_* environment variables (for a child process)."""
        return {"PINGAN_" + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    def redacted(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["mqtt_password"] = "***"
        out["database_url"] = _redact_url(self.database_url)
        out["demo_secret"] = "***"
        return out


def _parse(key: str, raw: str, type_: Any) -> Any:
    try:
        if type_ is int:
            return int(raw)
        if type_ is float:
            return float(raw)
        if type_ is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is not a valid {type_.__name__}") from exc
    return raw


def _redact_url(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"

"""The platform's own MQTT connections (service account from the settings)."""

from __future__ import annotations

import structlog

from core.mqtt import MqttClient, MqttError
from core.settings import Settings

log = structlog.get_logger(__name__)


def platform_client(
    settings: Settings, *, client_id: str, name: str, persistent: bool = False, manual_ack: bool = False
) -> MqttClient:
    """A client of the platform's service account. `persistent`: an MQTT 5 session the broker
    keeps while the client is away (stable client id; messages queued and redelivered)."""
    return MqttClient(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=client_id,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        clean_start=not persistent,
        session_expiry=settings.mqtt_session_expiry_s if persistent else 0,
        manual_ack=manual_ack,
        max_inflight=settings.mqtt_max_inflight,
        name=name,
    )


async def discard_session(settings: Settings, client_id: str, *, timeout: float = 10.0) -> bool:
    """End the persistent session of `client_id` now: connect under it with a clean start and
    leave (session expiry 0). For a gateway that is gone for good (a test module's, a benchmark
    run's), not for one that restarts: its session holds the events published while it is away.

    Mosquitto 2.0.11 (Debian 12) re-checks every session on a password-file reload (SIGHUP),
    and "disconnects" the inactive persistent ones again each time, which corrupts its list of
    expiring sessions: it has crashed in session_expiry__remove after such reloads (and once at
    a session's expiry). A session discarded this way is no longer there to trip it.
    Returns False if the broker could not be reached (the session then expires by itself)."""
    client = platform_client(settings, client_id=client_id, name="mqtt.discard")
    try:
        await client.start(timeout=timeout)
        return True
    except (MqttError, TimeoutError) as exc:
        log.warning("mqtt session not discarded", client_id=client_id, error=repr(exc))
        return False
    finally:
        await client.stop()

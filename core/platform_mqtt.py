"""The platform's own MQTT connections (service account from the settings)."""

from __future__ import annotations

from core.mqtt import MqttClient
from core.settings import Settings


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
        name=name,
    )

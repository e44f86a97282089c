from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.settings import Settings


def test_settings_from_env_parse_types_and_ignore_other_variables() -> None:
    s = Settings.from_env(
        {
            "PINGAN_MQTT_PORT": "1999",
            "PINGAN_POLL_INTERVAL_S": "0.25",
            "PINGAN_KAFKA_TOPIC_PREFIX": "city7",
            "OTHER": "x",
        }
    )
    assert s.mqtt_port == 1999 and s.poll_interval_s == 0.25 and s.kafka_topic_prefix == "city7"


def test_bad_number_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="PINGAN_MQTT_PORT"):
        Settings.from_env({"PINGAN_MQTT_PORT": "eighteen"})


def test_round_trip_through_env_and_redaction() -> None:
    s = Settings.from_env({}, mqtt_password="secret", database_url="postgresql://u:pw@h:1/db")
    assert Settings.from_env(s.to_env()) == s
    red = s.redacted()
    assert red["mqtt_password"] == "***" and "pw" not in red["database_url"]

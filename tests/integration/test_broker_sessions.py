"""Two guards against Mosquitto 2.0.11's faults, on the test stack's real broker: a discarded
persistent session is gone, and a new account is taken even when the broker never got (or
lost) the reload signal for it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from core.mosquitto_passwords import hash_password, write_password_file
from core.mqtt import MqttClient, MqttConnectError
from core.platform_mqtt import discard_session, platform_client
from core.settings import Settings
from dispatch.credentials import login_probe, wait_broker_accepts

pytestmark = pytest.mark.stack


def _accounts(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text().splitlines():
        if line:
            user, encoded = line.split(":", 1)
            out.append((user, encoded))
    return out


async def test_a_discarded_session_is_gone(base_settings: Settings) -> None:
    client_id = f"pingan-gw-test-discard-{uuid.uuid4().hex[:8]}"
    topic = f"pingan/v1/test/{uuid.uuid4().hex[:8]}"

    async def persistent() -> MqttClient:
        c = platform_client(base_settings, client_id=client_id, name="test.persistent", persistent=True)
        await c.start(timeout=10)
        return c

    first = await persistent()
    await first.subscribe(topic, qos=1)
    await first.stop()
    again = await persistent()
    try:
        assert again.session_present  # the broker kept it: what discard_session is for
    finally:
        await again.stop()

    assert await discard_session(base_settings, client_id)
    after = await persistent()
    try:
        assert not after.session_present
    finally:
        await after.stop()
        await discard_session(base_settings, client_id)


async def test_a_new_account_is_taken_without_the_reload_signal(base_settings: Settings) -> None:
    """The password file gains an account but the broker is not told (as when it lost the
    signal): wait_broker_accepts gets it to reload, and the account logs in."""
    path = Path(base_settings.mqtt_password_file)
    entries = _accounts(path)
    username, password = f"t-sig-{uuid.uuid4().hex[:8]}", "no-signal-password"
    write_password_file(path, [*entries, (username, hash_password(password))])
    try:
        probe = login_probe(base_settings, username, password)
        with pytest.raises(MqttConnectError):  # no reload yet: the broker does not know it
            await probe.start(timeout=5)
        await probe.stop()
        await wait_broker_accepts(base_settings, username, password, timeout=15)
    finally:
        write_password_file(path, entries)

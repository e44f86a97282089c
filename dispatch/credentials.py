"""Device credentials: provisioning, and the broker's password file written from Postgres."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from core.errors import NotFound, PinganError
from core.mosquitto_passwords import hash_password, reload_broker, verify_password, write_password_file
from core.mqtt import MqttClient, MqttConnectError
from core.settings import Settings
from schemas.events import DEVICE_ID_PATTERN

log = structlog.get_logger(__name__)

_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)

DEVICE_KINDS = (
    "panic_button",
    "pendant",
    "alarm_column",
    "smoke_detector",
    "gas_detector",
    "fall_detector",
    "door_sensor",
)


class InvalidDevice(PinganError):
    pass


def demo_password(settings: Settings, device_id: str) -> str:
    """The demo city's device passwords derive from a secret, so the simulator can log in."""
    digest = hmac.new(settings.demo_secret.encode(), device_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def new_password() -> str:
    return secrets.token_urlsafe(18)


@dataclass(frozen=True, slots=True)
class Provisioned:
    device_id: str
    grid_code: str
    kind: str
    username: str
    password: str


async def add_device(
    conn: asyncpg.Connection[Any],
    *,
    device_id: str,
    grid_code: str,
    kind: str,
    address: str = "",
    resident_note: str = "",
    password: str | None = None,
) -> Provisioned:
    # The device id is also its MQTT user name: no ':' (mosquitto's password file separator).
    if len(device_id) > 64 or not _DEVICE_ID.fullmatch(device_id):
        raise InvalidDevice(f"device id {device_id!r}: 1-64 letters, digits and . _ -, starting with a letter or digit")
    if kind not in DEVICE_KINDS:
        raise InvalidDevice(f"unknown device kind {kind!r}; known: {', '.join(DEVICE_KINDS)}")
    level = await conn.fetchval("SELECT level FROM units WHERE code = $1", grid_code)
    if level is None:
        raise NotFound(f"no unit with code {grid_code}")
    if level != "grid":
        raise InvalidDevice(f"unit {grid_code} is a {level}, devices belong to a grid cell")
    if await conn.fetchval("SELECT true FROM officers WHERE officer_id = $1", device_id):
        raise InvalidDevice(f"{device_id} is an officer's id; devices and officers share the broker's user names")
    password = password or new_password()
    inserted = await conn.fetchval(
        """INSERT INTO devices (device_id, grid_code, kind, address, resident_note, mqtt_password_hash)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (device_id) DO NOTHING
           RETURNING device_id""",
        device_id,
        grid_code,
        kind,
        address,
        resident_note,
        hash_password(password),
    )
    if inserted is None:
        raise InvalidDevice(f"device {device_id} exists already")

    return Provisioned(device_id, grid_code, kind, device_id, password)


_SYNC_LOCK = 0x70616D71  # advisory lock: one password-file writer at a time


async def sync_broker_credentials(conn: asyncpg.Connection[Any], settings: Settings) -> int:
    """Rewrite the broker's password file from Postgres (platform account, active devices,
    officer apps) and ask the broker to reload it. Returns the number of accounts written.

    Runs in a transaction holding an advisory lock, so concurrent writers take turns and
    each writes what is committed (or what its own transaction added). A row that cannot
    be an MQTT account is left out with an error in the log, never blocking the others."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SYNC_LOCK)
        rows = await conn.fetch(
            "SELECT device_id, mqtt_password_hash FROM devices "
            "WHERE active AND mqtt_password_hash IS NOT NULL ORDER BY device_id"
        )
        entries = [(settings.mqtt_username, _platform_entry(settings))]
        for r in rows:
            if r["device_id"] == settings.mqtt_username or not _DEVICE_ID.fullmatch(r["device_id"]):
                log.error("device left out of the broker's accounts: unusable id", device_id=r["device_id"])
                continue
            entries.append((r["device_id"], r["mqtt_password_hash"]))
        taken = {name for name, _ in entries}
        for r in await conn.fetch(
            "SELECT officer_id, mqtt_password_hash FROM officers "
            "WHERE active AND mqtt_password_hash IS NOT NULL ORDER BY officer_id"
        ):
            if r["officer_id"] in taken or not _DEVICE_ID.fullmatch(r["officer_id"]):
                log.error("officer left out of the broker's accounts: unusable id", officer_id=r["officer_id"])
                continue
            entries.append((r["officer_id"], r["mqtt_password_hash"]))
        wanted = "".join(f"{u}:{h}\n" for u, h in entries)
        if _current(settings.mqtt_password_file) == wanted:
            return len(entries)  # nothing changed: no rewrite, no reload
        count = write_password_file(settings.mqtt_password_file, entries)
    # Mosquitto 2.0.11 has been seen to crash on a reload (SIGHUP) now and then, so the
    # platform reloads it only when the accounts really changed.
    reloaded = reload_broker(settings.mqtt_pid_file)
    log.info("broker credentials written", accounts=count, reloaded=reloaded)
    return count


def _current(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _platform_entry(settings: Settings) -> str:
    """The platform account's entry: the one in the file when it still matches the password
    (so an unchanged file stays byte for byte the same), else a new hash."""
    for line in (_current(settings.mqtt_password_file) or "").splitlines():
        user, _, encoded = line.partition(":")
        if user == settings.mqtt_username and encoded and verify_password(settings.mqtt_password, encoded):
            return encoded
    return hash_password(settings.mqtt_password)


def login_probe(settings: Settings, username: str, password: str) -> MqttClient:
    """A one-off client that only tries to log in with an account (no reconnects): start() it
    to see whether the broker takes the account, then stop() it."""
    return MqttClient(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=f"probe-{uuid.uuid4().hex[:8]}",
        username=username,
        password=password,
        reconnect=False,
        name="credentials.probe",
    )


async def wait_broker_accepts(settings: Settings, username: str, password: str, *, timeout: float = 15.0) -> None:
    """Return once the broker takes this account (a login with it succeeds); raise
    MqttConnectError if it still refuses after `timeout` seconds.

    The broker reloads its password file a moment after the SIGHUP, and Mosquitto 2.0.11 can
    lose a SIGHUP that arrives while it is still busy with the one before (two syncs in a row:
    one reload in its log, and the second file never read). So while the account is refused,
    the broker is asked to reload again, once a second."""

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    next_reload = loop.time() + 1.0
    while True:
        probe = login_probe(settings, username, password)
        try:
            await probe.start(timeout=5)
            return
        except MqttConnectError:
            if loop.time() > deadline:
                raise
            if loop.time() >= next_reload:
                log.info("broker still refuses a new account: reloading it again", username=username)
                reload_broker(settings.mqtt_pid_file)
                next_reload = loop.time() + 1.0
            await asyncio.sleep(0.05)
        finally:
            await probe.stop()

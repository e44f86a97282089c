"""HTTP ingest for integrators: `POST /api/v1/devices/{device_id}/events` with the same
payload as over MQTT, authenticated as the device (HTTP Basic: device id and its password).

The answer comes once Kafka holds the event: 202 with the "accepted" receipt, or 422 with the
reason of a refusal (which is on the dead-letter topic like any other). The same validation
as the MQTT gateway (gateways/intake.py)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import structlog
from aiohttp import web

from core import kafka
from core.mosquitto_passwords import verify_password
from core.settings import Settings
from core.timeutil import utcnow
from core.web_server import WebServer
from gateways.intake import Intake
from schemas import topics
from schemas.events import DEVICE_ID_PATTERN, MAX_PAYLOAD_BYTES
from schemas.messages import Ingress

log = structlog.get_logger(__name__)

INTAKE: web.AppKey[Intake] = web.AppKey("intake", Intake)
PRODUCER: web.AppKey[Any] = web.AppKey("producer", object)
CREDENTIALS: web.AppKey[DeviceCredentials] = web.AppKey("credentials", object)  # type: ignore[arg-type]


def _json(body: Any, status: int) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json")


class DeviceCredentials:
    """Checks a device's password against its stored hash; a good check is remembered briefly
    (by a digest of the password), so a busy device does not cost a key derivation each time."""

    def __init__(self, pool: asyncpg.Pool[Any], ttl_s: float = 60.0) -> None:
        self.pool = pool
        self.ttl_s = ttl_s
        self._ok: dict[tuple[str, bytes], float] = {}

    def forget(self, device_id: str | None) -> None:
        """A device was deactivated or changed (None: perhaps any): check it afresh."""
        if device_id is None:
            self._ok.clear()
        else:
            for key in [k for k in self._ok if k[0] == device_id]:
                del self._ok[key]

    async def check(self, device_id: str, password: str) -> bool:
        key = (device_id, hashlib.sha256(password.encode()).digest())
        now = time.monotonic()
        if self._ok.get(key, 0) > now:
            return True
        encoded = await self.pool.fetchval(
            "SELECT mqtt_password_hash FROM devices WHERE device_id = $1 AND active", device_id
        )
        if not encoded or not verify_password(password, encoded):
            return False
        if len(self._ok) > 100_000:
            self._ok.clear()
        self._ok[key] = now + self.ttl_s
        return True


_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


def parse_basic(header: str) -> tuple[str, str] | None:
    """(device id, password) of an `Authorization: Basic` header; None for anything else,
    including a user name that cannot be a device id (it never reaches the database)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or len(value) > 1024:
        return None
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if len(user) > 64 or not _DEVICE_ID.fullmatch(user) or not password or len(password) > 256:
        return None
    return user, password


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every refusal is JSON with a code and a reason, like the API's."""
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json({"code": exc.reason.lower().replace(" ", "_"), "message": exc.text or exc.reason}, exc.status)


async def post_event(request: web.Request) -> web.Response:
    device_id = request.match_info["device_id"]
    creds = parse_basic(request.headers.get("Authorization", ""))
    if creds is None or not await request.app[CREDENTIALS].check(creds[0], creds[1]):
        resp = _json({"code": "unauthenticated", "message": "HTTP Basic with the device id and its password"}, 401)
        resp.headers["WWW-Authenticate"] = 'Basic realm="pingan devices"'
        return resp
    if creds[0] != device_id:
        return _json({"code": "forbidden", "message": "a device may publish only as itself"}, 403)
    payload = await request.read()
    intake = request.app[INTAKE]
    taken = await intake.take(
        payload,
        topic_device=device_id,
        source=topics.device_events(device_id),
        received_at=utcnow(),
    )
    producer = request.app[PRODUCER]
    fut = await intake.send(producer, taken)
    # The event must be safe before we answer, even if the client hangs up meanwhile.
    await asyncio.shield(intake.confirm(producer, taken, fut))
    return _json(taken.receipt, 202 if taken.accepted else 422)


def build_app(settings: Settings, pool: asyncpg.Pool[Any], producer: Any, *, gateway_id: str) -> web.Application:
    # Larger than the event limit, so an oversized payload is refused with its reason (and
    # lands on the dead-letter topic) instead of being cut off by the server.
    app = web.Application(client_max_size=max(64 * 1024, 4 * MAX_PAYLOAD_BYTES), middlewares=[_errors])
    app[INTAKE] = intake = Intake(settings, pool, gateway_id=gateway_id, ingress=Ingress.HTTP)
    app[PRODUCER] = producer
    app[CREDENTIALS] = credentials = DeviceCredentials(pool)
    intake.on_device_change.append(credentials.forget)

    async def listen(app: web.Application) -> AsyncIterator[None]:
        await intake.start()
        yield
        await intake.stop()

    app.cleanup_ctx.append(listen)
    app.router.add_post("/api/v1/devices/{device_id}/events", post_event)
    return app


class HttpIngest(WebServer):
    name = "ingest"

    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any]) -> None:
        super().__init__(settings.http_host, settings.ingest_port)
        self.settings = settings
        self.pool = pool
        self.gateway_id = f"ingest-{settings.instance_id}"
        self.producer: Any = None

    async def build(self) -> web.Application:
        self.producer = kafka.IngressProducers(self.settings, client_id=f"pingan-{self.gateway_id}")
        await self.producer.start()
        return build_app(self.settings, self.pool, self.producer, gateway_id=self.gateway_id)

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()  # after the server finished the requests in hand

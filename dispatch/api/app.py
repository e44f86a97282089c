"""The HTTP API under /api/v1 (aiohttp): incidents, officer actions, statistics.

Every route but the health checks and the OpenAPI document needs `Authorization: Bearer
<token>` of an officer (`dispatch officer token`), and acts only inside that officer's
jurisdiction. Errors are JSON: {"code": ..., "message": ...}.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import orjson
import structlog
from aiohttp import web

from core import kafka
from core.errors import NotFound
from core.incident_model import IllegalAction
from core.incident_service import IncidentService
from core.lifecycle import Component
from core.officer_actions import Forbidden, Officer, Unauthenticated, covers, parse_incident_id, perform
from core.sessions import authenticate
from core.settings import Settings
from core.timeutil import utcnow
from dispatch import stats
from dispatch.api.openapi import OPENAPI
from schemas.actions import ActionRequest

log = structlog.get_logger(__name__)

POOL: web.AppKey[asyncpg.Pool[Any]] = web.AppKey("pool", asyncpg.Pool)
SERVICE: web.AppKey[IncidentService] = web.AppKey("service", IncidentService)
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock", object)  # type: ignore[arg-type]

_action_decoder = msgspec.json.Decoder(ActionRequest)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body, default=_default), status=status, content_type="application/json")


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    return str(obj)


def error(status: int, code: str, message: str) -> web.Response:
    return json_response({"code": code, "message": message}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Unauthenticated as exc:
        resp = error(401, "unauthenticated", str(exc))
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp
    except Forbidden as exc:
        return error(403, "forbidden", str(exc))
    except NotFound as exc:
        return error(404, "not_found", str(exc))
    except IllegalAction as exc:
        return error(409, exc.code, exc.message)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return error(422, "invalid_body", str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
        raise
    except Exception:
        log.exception("request failed", path=request.path, method=request.method)
        return error(500, "internal", "internal error; it is logged")


async def current_officer(request: web.Request) -> Officer:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("sign in: send Authorization: Bearer <token>")
    async with request.app[POOL].acquire() as conn:
        officer = await authenticate(conn, token.strip(), now=request.app[CLOCK]())
    if officer is None:
        raise Unauthenticated("the token is unknown, expired or revoked")
    return officer


async def healthz(request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(2):
            await request.app[POOL].fetchval("SELECT 1")
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return error(503, "not_ready", f"database: {exc!r}")
    return json_response({"ok": True})


async def openapi(request: web.Request) -> web.Response:
    return json_response(OPENAPI)


async def me(request: web.Request) -> web.Response:
    o = await current_officer(request)
    return json_response(
        {"officer_id": o.officer_id, "name": o.name, "role": o.role, "unit_code": o.unit_code, "level": o.unit_level}
    )


_INCIDENT = """
SELECT i.incident_id, i.case_number, i.category, i.status, i.priority, i.level, i.awaiting,
       i.deadline_at, i.device_id, i.grid_code, i.event_type, i.first_event_id, i.pressed_at,
       i.received_at, i.opened_at, i.first_notified_at, i.acknowledged_at, i.acknowledged_by,
       i.ack_level, i.on_scene_at, i.on_scene_by, i.closed_at, i.closed_by, i.outcome, i.referral,
       i.assigned_to, i.is_major, i.major_id, i.event_count, i.version, i.policy,
       d.kind AS device_kind, d.address, d.resident_note, d.building
  FROM incidents i LEFT JOIN devices d ON d.device_id = i.device_id
 WHERE i.incident_id = $1
"""


async def get_incident(request: web.Request) -> web.Response:
    officer = await current_officer(request)
    incident_id = parse_incident_id(request.match_info["incident_id"])
    async with request.app[POOL].acquire() as conn:
        row = await conn.fetchrow(_INCIDENT, incident_id)
        if row is None:
            raise NotFound(f"no incident {incident_id}")
        if not await covers(conn, officer.unit_code, row["grid_code"]):
            raise Forbidden(f"incident {incident_id} is outside the jurisdiction of {officer.unit_code}")
        timeline = await conn.fetch(
            "SELECT at, kind, actor, detail FROM incident_timeline WHERE incident_id = $1 ORDER BY id", incident_id
        )
        notes = await conn.fetch(
            "SELECT id, officer_id, kind, level, reason, status, created_at, sent_at, attempts, last_error "
            "FROM notifications WHERE incident_id = $1 ORDER BY id",
            incident_id,
        )
    body = dict(row)
    body["timeline"] = [dict(r) for r in timeline]
    body["notifications"] = [dict(r) for r in notes]
    return json_response(body)


async def post_action(request: web.Request) -> web.Response:
    officer = await current_officer(request)
    incident_id = parse_incident_id(request.match_info["incident_id"])
    raw = await request.read()
    if len(raw) > 16 * 1024:
        return error(413, "too_large", "the body is larger than 16 KiB")
    req = _action_decoder.decode(raw)
    now = request.app[CLOCK]()
    async with request.app[POOL].acquire() as conn, conn.transaction():
        state = await perform(conn, request.app[SERVICE], officer, incident_id, req, now)
    log.info("officer action", officer_id=officer.officer_id, incident_id=str(incident_id), action=req.action)
    return json_response(
        {
            "incident_id": str(incident_id),
            "status": state.status,
            "level": state.level,
            "awaiting": state.awaiting,
            "deadline_at": state.deadline_at,
            "assigned_to": state.assigned_to,
            "version": state.version,
        }
    )


def _parse_time(raw: str | None, default: datetime, name: str) -> datetime:
    if raw is None:
        return default
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise web.HTTPUnprocessableEntity(text=f"{name}: not an ISO 8601 date-time: {raw!r}") from exc
    if value.tzinfo is None:
        raise web.HTTPUnprocessableEntity(text=f"{name}: give a UTC offset, e.g. 2026-11-26T00:00:00+08:00")
    return value


async def get_response_times(request: web.Request) -> web.Response:
    officer = await current_officer(request)
    unit = request.query.get("unit", officer.unit_code)
    now = request.app[CLOCK]()
    until = _parse_time(request.query.get("to"), now, "to")
    since = _parse_time(request.query.get("from"), until - timedelta(days=7), "from")
    if since >= until:
        raise web.HTTPUnprocessableEntity(text="from must be before to")
    async with request.app[POOL].acquire() as conn:
        path = await conn.fetchval("SELECT path FROM units WHERE code = $1", unit)
        if path is None:
            raise NotFound(f"no unit {unit}")
        if officer.unit_code not in path:
            raise Forbidden(f"unit {unit} is outside the jurisdiction of {officer.unit_code}")
        body = await stats.response_times(conn, unit, since, until)
    return json_response(body)


def build_app(
    settings: Settings, pool: asyncpg.Pool[Any], *, clock: Callable[[], datetime] = utcnow
) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=64 * 1024)
    app[POOL] = pool
    app[SERVICE] = IncidentService(kafka.topics(settings))
    app[CLOCK] = clock
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/me", me)
    app.router.add_get("/api/v1/incidents/{incident_id}", get_incident)
    app.router.add_post("/api/v1/incidents/{incident_id}/actions", post_action)
    app.router.add_get("/api/v1/stats/response-times", get_response_times)
    return app


class ApiServer(Component):
    name = "api"

    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any]) -> None:
        super().__init__()
        self.settings = settings
        self.pool = pool
        self.ready = asyncio.Event()
        self.port: int | None = None

    async def run(self) -> None:
        runner = web.AppRunner(build_app(self.settings, self.pool), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.settings.http_host, self.settings.http_port)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1] if sockets else self.settings.http_port
            log.info("api listening", host=self.settings.http_host, port=self.port)
            self.ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

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
import structlog
from aiohttp import web

from core import kafka
from core.errors import NotFound
from core.incident_model import IllegalAction
from core.incident_service import IncidentService
from core.officer_actions import Forbidden, Unauthenticated, covers, parse_incident_id, perform
from core.sessions import revoke, sign_in
from core.settings import Settings
from core.timeutil import utcnow
from core.web_server import WebServer
from dispatch import stats
from dispatch.api import admin, queries
from dispatch.api.common import (
    CLOCK,
    POOL,
    SERVICE,
    SESSION_COOKIE,
    SETTINGS,
    current_officer,
    error,
    int_param,
    json_response,
    time_param,
    token_of,
)
from dispatch.api.live import FEED, LiveFeed, websocket
from dispatch.api.metrics import metrics
from dispatch.api.openapi import OPENAPI
from schemas.actions import ActionRequest, SignIn

log = structlog.get_logger(__name__)

_action_decoder = msgspec.json.Decoder(ActionRequest)
_sign_in_decoder = msgspec.json.Decoder(SignIn)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    return json_response(_officer_json(o))


async def get_incident(request: web.Request) -> web.Response:
    officer = await current_officer(request)
    incident_id = parse_incident_id(request.match_info["incident_id"])
    async with request.app[POOL].acquire() as conn:
        row = await conn.fetchrow(queries.ONE, incident_id)
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
        history = []
        if row["device_id"]:
            history = await conn.fetch(
                "SELECT event_id, type, occurred_at, received_at, battery FROM events "
                "WHERE device_id = $1 ORDER BY received_at DESC LIMIT 20",
                row["device_id"],
            )
        members = await conn.fetch(
            "SELECT incident_id, device_id, status, case_number FROM incidents WHERE major_id = $1 ORDER BY opened_at",
            incident_id,
        )
        policy = await conn.fetchval("SELECT policy FROM incidents WHERE incident_id = $1", incident_id)
    body = dict(row)
    body["policy"] = policy
    body["timeline"] = [dict(r) for r in timeline]
    body["notifications"] = [dict(r) for r in notes]
    body["device_history"] = [dict(r) for r in history]
    body["members"] = [dict(r) for r in members]
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


async def get_response_times(request: web.Request) -> web.StreamResponse:
    officer = await current_officer(request)
    unit = request.query.get("unit", officer.unit_code)
    now = request.app[CLOCK]()
    until = time_param(request, "to", now)
    since = time_param(request, "from", None)
    assert until is not None
    since = since or until - timedelta(days=7)
    if since >= until:
        raise web.HTTPUnprocessableEntity(text="from must be before to")
    async with request.app[POOL].acquire() as conn:
        path = await conn.fetchval("SELECT path FROM units WHERE code = $1", unit)
        if path is None:
            raise NotFound(f"no unit {unit}")
        if officer.unit_code not in path:
            raise Forbidden(f"unit {unit} is outside the jurisdiction of {officer.unit_code}")
        body = await stats.response_times(conn, unit, since, until)
    if request.query.get("format") == "csv":
        return web.Response(
            body=stats.to_csv(body).encode("utf-8-sig"),  # with a BOM, so spreadsheet programs read the Chinese names
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="response-times-{unit}.csv"'},
        )
    return json_response(body)


async def post_sign_in(request: web.Request) -> web.Response:
    raw = await request.read()
    if len(raw) > 4096:
        return error(413, "too_large", "the body is larger than 4 KiB")
    body = _sign_in_decoder.decode(raw)
    settings = request.app[SETTINGS]
    async with request.app[POOL].acquire() as conn:
        result = await sign_in(
            conn,
            body.officer_id,
            body.password,
            ttl=timedelta(hours=settings.session_ttl_h),
            now=request.app[CLOCK](),
        )
    if result is None:
        log.info("sign-in refused", officer_id=body.officer_id[:64])
        return error(401, "bad_credentials", "unknown officer or wrong password")
    token, officer = result
    log.info("signed in", officer_id=officer.officer_id)
    resp = json_response(
        {
            "token": token,
            "expires_in_s": int(settings.session_ttl_h * 3600),
            "officer": _officer_json(officer),
        }
    )
    resp.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="Strict",
        path="/",
        secure=settings.cookie_secure,
        max_age=int(settings.session_ttl_h * 3600),
    )
    return resp


async def post_sign_out(request: web.Request) -> web.Response:
    token = token_of(request)
    if token is not None:
        async with request.app[POOL].acquire() as conn:
            await revoke(conn, token, now=request.app[CLOCK]())
    resp = web.Response(status=204)
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp


def _officer_json(o: Any) -> dict[str, Any]:
    return {"officer_id": o.officer_id, "name": o.name, "role": o.role, "unit_code": o.unit_code, "level": o.unit_level}


async def list_incidents(request: web.Request) -> web.Response:
    officer = await current_officer(request)
    state = request.query.get("state", "open")
    if state not in ("open", "closed"):
        raise web.HTTPUnprocessableEntity(text="state: open or closed")
    unit = request.query.get("unit")
    limit = int_param(request, "limit", 200, lo=1, hi=1000)
    offset = int_param(request, "offset", 0, lo=0, hi=1_000_000)
    sql = queries.LIST_OPEN if state == "open" else queries.LIST_CLOSED
    async with request.app[POOL].acquire() as conn:
        if unit is not None and not await _unit_in(conn, unit, officer.unit_code):
            raise Forbidden(f"unit {unit} is outside the jurisdiction of {officer.unit_code}")
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(sql, officer.unit_code, unit, limit, offset)
            newest = await conn.fetchval(
                "SELECT max(i.updated_at) FROM incidents i JOIN units g ON g.code = i.grid_code WHERE $1 = ANY(g.path)",
                officer.unit_code,
            )
    return json_response({"items": [dict(r) for r in rows], "limit": limit, "offset": offset, "cursor": newest})


async def _unit_in(conn: Any, unit: str, root: str) -> bool:
    path = await conn.fetchval("SELECT path FROM units WHERE code = $1", unit)
    if path is None:
        raise NotFound(f"no unit {unit}")
    return root in path


async def list_units(request: web.Request) -> web.Response:
    officer = await current_officer(request)
    rows = await request.app[POOL].fetch(
        "SELECT code, level, parent_code, name, name_en FROM units WHERE $1 = ANY(path) ORDER BY code",
        officer.unit_code,
    )
    return json_response({"items": [dict(r) for r in rows]})


_DEVICES = """
SELECT d.device_id, d.kind, d.grid_code, g.name AS grid_name, g.name_en AS grid_name_en, d.address,
       d.building, d.active, d.last_seen_at, d.battery,
       (d.last_seen_at IS NOT NULL AND d.last_seen_at > $4) AS online,
       (d.battery IS NOT NULL AND d.battery < 20) AS low_battery
  FROM devices d JOIN units g ON g.code = d.grid_code
 WHERE $1 = ANY(g.path) AND ($2::text IS NULL OR $2 = ANY(g.path))
   AND CASE $3
         WHEN 'online' THEN d.last_seen_at > $4
         WHEN 'offline' THEN d.last_seen_at IS NULL OR d.last_seen_at <= $4
         WHEN 'low_battery' THEN d.battery < 20
         WHEN 'inactive' THEN NOT d.active
         ELSE true END
 ORDER BY d.grid_code, d.device_id
 LIMIT $5 OFFSET $6
"""


async def list_devices(request: web.Request) -> web.Response:
    officer = await current_officer(request)
    state = request.query.get("state", "all")
    if state not in ("all", "online", "offline", "low_battery", "inactive"):
        raise web.HTTPUnprocessableEntity(text="state: all, online, offline, low_battery or inactive")
    unit = request.query.get("unit")
    limit = int_param(request, "limit", 200, lo=1, hi=2000)
    offset = int_param(request, "offset", 0, lo=0, hi=10_000_000)
    online_since = request.app[CLOCK]() - timedelta(seconds=request.app[SETTINGS].device_offline_after_s)
    async with request.app[POOL].acquire() as conn:
        if unit is not None and not await _unit_in(conn, unit, officer.unit_code):
            raise Forbidden(f"unit {unit} is outside the jurisdiction of {officer.unit_code}")
        rows = await conn.fetch(_DEVICES, officer.unit_code, unit, state, online_since, limit, offset)
    return json_response({"items": [dict(r) for r in rows], "limit": limit, "offset": offset})


def build_app(
    settings: Settings,
    pool: asyncpg.Pool[Any],
    *,
    clock: Callable[[], datetime] = utcnow,
    feed: LiveFeed | None = None,
) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=64 * 1024)
    app[POOL] = pool
    app[SERVICE] = IncidentService(kafka.topics(settings))
    app[CLOCK] = clock
    app[SETTINGS] = settings
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/me", me)
    app.router.add_get("/api/v1/incidents/{incident_id}", get_incident)
    app.router.add_post("/api/v1/incidents/{incident_id}/actions", post_action)
    app.router.add_get("/api/v1/stats/response-times", get_response_times)
    app.router.add_post("/api/v1/auth/sign-in", post_sign_in)
    app.router.add_post("/api/v1/auth/sign-out", post_sign_out)
    app.router.add_get("/api/v1/incidents", list_incidents)
    app.router.add_get("/api/v1/units", list_units)
    app.router.add_get("/api/v1/devices", list_devices)
    app.router.add_get("/api/v1/ws", websocket)
    app.router.add_get("/metrics", metrics)
    admin.register(app)
    if feed is not None:
        app[FEED] = feed
    try:
        from dispatch.web.pages import register
    except ImportError:  # the pages are optional for an API-only deployment
        pass
    else:
        register(app)
    return app


class ApiServer(WebServer):
    name = "api"

    def __init__(self, settings: Settings, pool: asyncpg.Pool[Any]) -> None:
        super().__init__(settings.http_host, settings.http_port)
        self.settings = settings
        self.pool = pool
        self.feed = LiveFeed(settings, pool)

    async def build(self) -> web.Application:
        await self.feed.start()  # the live queue's Kafka consumer
        return build_app(self.settings, self.pool, feed=self.feed)

    async def close(self) -> None:
        await self.feed.stop()

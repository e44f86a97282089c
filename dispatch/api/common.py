"""What every API module shares: app keys, JSON responses, the signed-in officer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import orjson
from aiohttp import web

from core.incident_service import IncidentService
from core.officer_actions import Officer, Unauthenticated
from core.sessions import authenticate
from core.settings import Settings

POOL: web.AppKey[asyncpg.Pool[Any]] = web.AppKey("pool", asyncpg.Pool)
SERVICE: web.AppKey[IncidentService] = web.AppKey("service", IncidentService)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
CLOCK: web.AppKey[Callable[[], datetime]] = web.AppKey("clock", object)  # type: ignore[arg-type]

SESSION_COOKIE = "pingan_session"


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, UUID | Decimal):
        return str(obj)
    raise TypeError(type(obj).__name__)


def dumps(body: Any) -> bytes:
    return orjson.dumps(body, default=_default)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type="application/json")


def error(status: int, code: str, message: str) -> web.Response:
    return json_response({"code": code, "message": message}, status=status)


def token_of(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    cookie = request.cookies.get(SESSION_COOKIE)
    return cookie or None


async def current_officer(request: web.Request) -> Officer:
    token = token_of(request)
    if token is None:
        raise Unauthenticated("sign in first (a session cookie or Authorization: Bearer <token>)")
    async with request.app[POOL].acquire() as conn:
        officer = await authenticate(conn, token, now=request.app[CLOCK]())
    if officer is None:
        raise Unauthenticated("the session is unknown, expired or signed out")
    return officer


def int_param(request: web.Request, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise web.HTTPUnprocessableEntity(text=f"{name}: not a whole number: {raw!r}") from exc
    if not lo <= value <= hi:
        raise web.HTTPUnprocessableEntity(text=f"{name}: must be between {lo} and {hi}")
    return value


def time_param(request: web.Request, name: str, default: datetime | None) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    raw = raw.replace(" ", "+")  # an unencoded '+' of the UTC offset arrives as a space
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise web.HTTPUnprocessableEntity(text=f"{name}: not an ISO 8601 date-time: {raw!r}") from exc
    if value.tzinfo is None:
        raise web.HTTPUnprocessableEntity(text=f"{name}: give a UTC offset, e.g. 2026-11-26T00:00:00+08:00")
    return value

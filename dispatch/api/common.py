"""What every API module shares: app keys, JSON responses, the signed-in officer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import msgspec
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

T = TypeVar("T")


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


# Query times outside these are refused: far enough for any real question, and the arithmetic
# on them (a week back, ten seconds of overlap) can never leave the calendar.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def int_param(request: web.Request, name: str, default: int, *, lo: int, hi: int) -> int:
    return parse_int(name, request.query.get(name), default, lo=lo, hi=hi)


def parse_int(name: str, raw: str | None, default: int, *, lo: int, hi: int) -> int:
    """A whole number from a query string, or 422 with the reason."""
    if raw is None:
        return default
    if len(raw) > 20:
        raise web.HTTPUnprocessableEntity(text=f"{name}: not a whole number between {lo} and {hi}")
    try:
        value = int(raw)
    except ValueError as exc:
        raise web.HTTPUnprocessableEntity(text=f"{name}: not a whole number: {raw!r}") from exc
    if not lo <= value <= hi:
        raise web.HTTPUnprocessableEntity(text=f"{name}: must be between {lo} and {hi}")
    return value


def time_param(request: web.Request, name: str, default: datetime | None) -> datetime | None:
    return parse_time(name, request.query.get(name), default)


def parse_time(name: str, raw: str | None, default: datetime | None) -> datetime | None:
    """An ISO 8601 date-time with a UTC offset from a query string, or 422 with the reason."""
    if raw is None:
        return default
    if len(raw) > 64:
        raise web.HTTPUnprocessableEntity(text=f"{name}: not an ISO 8601 date-time")
    raw = raw.replace(" ", "+")  # an unencoded '+' of the UTC offset arrives as a space
    try:
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise web.HTTPUnprocessableEntity(text=f"{name}: not an ISO 8601 date-time: {raw!r}") from exc
    if value.tzinfo is None or value.utcoffset() is None:
        raise web.HTTPUnprocessableEntity(text=f"{name}: give a UTC offset, e.g. 2026-11-26T00:00:00+08:00")
    if value.year < EARLIEST.year or value.year >= LATEST.year or not EARLIEST <= value < LATEST:
        raise web.HTTPUnprocessableEntity(text=f"{name}: must lie between {EARLIEST.year} and {LATEST.year}")
    return value


def decode_body(raw: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """A JSON body as its type; anything else is a 422 with the reason (errors_middleware)."""
    try:
        return decoder.decode(raw)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"the body is not valid UTF-8 (byte {exc.start})") from exc
    except RecursionError as exc:
        raise msgspec.DecodeError("the body is nested too deeply") from exc

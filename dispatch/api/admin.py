"""Officer, roster and unit management under /api/v1 (administrators, in their jurisdiction).
Listing officers is open to every officer (to pick an assignee)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from aiohttp import web

from core.errors import NotFound
from core.officer_actions import Forbidden, Officer
from core.passwords import hash_password
from dispatch.api.common import CLOCK, EARLIEST, LATEST, POOL, current_officer, decode_body, json_response

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class NewOfficer(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    officer_id: Id
    unit_code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6,15}$")]
    name: Text
    role: Literal["grid_officer", "duty_officer", "admin"]
    phone: Annotated[str, msgspec.Meta(max_length=40)] = ""


class OfficerChange(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: Text | None = None
    phone: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    active: bool | None = None
    unit_code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6,15}$")] | None = None
    role: Literal["grid_officer", "duty_officer", "admin"] | None = None


class NewShift(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    starts_at: datetime
    ends_at: datetime


class NewUnit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6,15}$")]
    level: Literal["district", "street", "community", "grid"]
    parent_code: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6,12}$")]
    name: Text
    name_en: Annotated[str, msgspec.Meta(max_length=200)] = ""


_NEW_OFFICER = msgspec.json.Decoder(NewOfficer)
_OFFICER_CHANGE = msgspec.json.Decoder(OfficerChange)
_NEW_SHIFT = msgspec.json.Decoder(NewShift)
_NEW_UNIT = msgspec.json.Decoder(NewUnit)

_CHILD_LEVEL = {"city": "district", "district": "street", "street": "community", "community": "grid"}


async def _admin(request: web.Request) -> Officer:
    officer = await current_officer(request)
    if officer.role != "admin":
        raise Forbidden("only an administrator may manage officers, rosters and units")
    return officer


async def _unit_path(conn: asyncpg.Connection[Any], code: str) -> list[str]:
    path = await conn.fetchval("SELECT path FROM units WHERE code = $1", code)
    if path is None:
        raise NotFound(f"no unit {code}")
    return list(path)


async def _officer_in(conn: asyncpg.Connection[Any], officer_id: str, root: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT o.*, u.path FROM officers o JOIN units u ON u.code = o.unit_code WHERE o.officer_id = $1", officer_id
    )
    if row is None:
        raise NotFound(f"no officer {officer_id}")
    if root not in row["path"]:
        raise Forbidden(f"officer {officer_id} is outside the jurisdiction of {root}")
    return row


def _public(row: asyncpg.Record) -> dict[str, Any]:
    return {k: row[k] for k in ("officer_id", "unit_code", "name", "role", "phone", "active") if k in row}


async def list_officers(request: web.Request) -> web.Response:
    me = await current_officer(request)
    now = request.app[CLOCK]()
    rows = await request.app[POOL].fetch(
        """SELECT o.officer_id, o.unit_code, u.level, o.name, o.role, o.phone, o.active,
                  EXISTS (SELECT 1 FROM duty_shifts s WHERE s.officer_id = o.officer_id AND s.during @> $2::timestamptz)
                    AS on_shift
             FROM officers o JOIN units u ON u.code = o.unit_code
            WHERE $1 = ANY(u.path) ORDER BY u.path, o.officer_id""",
        me.unit_code,
        now,
    )
    return json_response({"items": [dict(r) for r in rows]})


async def create_officer(request: web.Request) -> web.Response:
    me = await _admin(request)
    body = decode_body(await request.read(), _NEW_OFFICER)
    password = secrets.token_urlsafe(12)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        path = await _unit_path(conn, body.unit_code)
        if me.unit_code not in path:
            raise Forbidden(f"unit {body.unit_code} is outside the jurisdiction of {me.unit_code}")
        level = await conn.fetchval("SELECT level FROM units WHERE code = $1", body.unit_code)
        if (body.role == "grid_officer") != (level == "grid"):
            raise web.HTTPUnprocessableEntity(text="grid officers belong to grid cells, duty officers to centres")
        if await conn.fetchval("SELECT true FROM devices WHERE device_id = $1", body.officer_id):
            raise web.HTTPConflict(text=f"{body.officer_id} is a device's id")
        row = await conn.fetchrow(
            """INSERT INTO officers (officer_id, unit_code, name, role, phone, password_hash, password_changed_at)
               VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT (officer_id) DO NOTHING RETURNING *""",
            body.officer_id,
            body.unit_code,
            body.name,
            body.role,
            body.phone,
            hash_password(password),
        )
        if row is None:
            raise web.HTTPConflict(text=f"officer {body.officer_id} exists already")
    return json_response({"officer": _public(row), "password": password, "note": "shown once"}, status=201)


async def change_officer(request: web.Request) -> web.Response:
    me = await _admin(request)
    body = decode_body(await request.read(), _OFFICER_CHANGE)
    officer_id = request.match_info["officer_id"]
    async with request.app[POOL].acquire() as conn, conn.transaction():
        current = await _officer_in(conn, officer_id, me.unit_code)
        if body.unit_code is not None and me.unit_code not in await _unit_path(conn, body.unit_code):
            raise Forbidden(f"unit {body.unit_code} is outside the jurisdiction of {me.unit_code}")
        row = await conn.fetchrow(
            """UPDATE officers SET name = COALESCE($2, name), phone = COALESCE($3, phone),
                      active = COALESCE($4, active), unit_code = COALESCE($5, unit_code), role = COALESCE($6, role)
                WHERE officer_id = $1 RETURNING *""",
            officer_id,
            body.name,
            body.phone,
            body.active,
            body.unit_code,
            body.role,
        )
        if body.active is False and current["active"]:
            await conn.execute(
                "UPDATE officer_sessions SET revoked_at = now() WHERE officer_id = $1 AND revoked_at IS NULL",
                officer_id,
            )
    return json_response({"officer": _public(row)})


async def add_shift(request: web.Request) -> web.Response:
    me = await _admin(request)
    body = decode_body(await request.read(), _NEW_SHIFT)
    if body.starts_at.tzinfo is None or body.ends_at.tzinfo is None or body.ends_at <= body.starts_at:
        raise web.HTTPUnprocessableEntity(text="a shift needs starts_at before ends_at, both with a UTC offset")
    if not (EARLIEST.year < body.starts_at.year and body.ends_at.year < LATEST.year):
        raise web.HTTPUnprocessableEntity(text=f"a shift lies between {EARLIEST.year} and {LATEST.year}")
    officer_id = request.match_info["officer_id"]
    async with request.app[POOL].acquire() as conn:
        await _officer_in(conn, officer_id, me.unit_code)
        shift_id = await conn.fetchval(
            "INSERT INTO duty_shifts (officer_id, during) VALUES ($1, tstzrange($2, $3)) RETURNING id",
            officer_id,
            body.starts_at,
            body.ends_at,
        )
    return json_response(
        {"shift_id": shift_id, "officer_id": officer_id, "starts_at": body.starts_at, "ends_at": body.ends_at},
        status=201,
    )


async def list_shifts(request: web.Request) -> web.Response:
    me = await current_officer(request)
    officer_id = request.match_info["officer_id"]
    async with request.app[POOL].acquire() as conn:
        await _officer_in(conn, officer_id, me.unit_code)
        rows = await conn.fetch(
            "SELECT id, lower(during) AS starts_at, upper(during) AS ends_at FROM duty_shifts "
            "WHERE officer_id = $1 ORDER BY lower(during)",
            officer_id,
        )
    return json_response({"items": [dict(r) for r in rows]})


async def create_unit(request: web.Request) -> web.Response:
    me = await _admin(request)
    body = decode_body(await request.read(), _NEW_UNIT)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        parent = await conn.fetchrow("SELECT level, path FROM units WHERE code = $1", body.parent_code)
        if parent is None:
            raise NotFound(f"no unit {body.parent_code}")
        if me.unit_code not in parent["path"]:
            raise Forbidden(f"unit {body.parent_code} is outside the jurisdiction of {me.unit_code}")
        if _CHILD_LEVEL.get(parent["level"]) != body.level:
            raise web.HTTPUnprocessableEntity(
                text=f"a {parent['level']} holds {_CHILD_LEVEL.get(parent['level'])} units"
            )
        if body.level != "district" and not body.code.startswith(body.parent_code):
            raise web.HTTPUnprocessableEntity(text="a unit's code starts with its parent's code")
        try:
            row = await conn.fetchrow(
                "INSERT INTO units (code, level, parent_code, name, name_en, path) VALUES ($1, $2, $3, $4, $5, $6) "
                "RETURNING code, level, parent_code, name, name_en",
                body.code,
                body.level,
                body.parent_code,
                body.name,
                body.name_en,
                [*parent["path"], body.code],
            )
        except asyncpg.UniqueViolationError as exc:
            raise web.HTTPConflict(text=f"unit {body.code} exists already") from exc
        except asyncpg.CheckViolationError as exc:
            raise web.HTTPUnprocessableEntity(text=f"the code does not fit the level: {exc}") from exc
    return json_response({"unit": dict(row)}, status=201)


def register(app: web.Application) -> None:
    app.router.add_get("/api/v1/officers", list_officers)
    app.router.add_post("/api/v1/officers", create_officer)
    app.router.add_patch("/api/v1/officers/{officer_id}", change_officer)
    app.router.add_get("/api/v1/officers/{officer_id}/shifts", list_shifts)
    app.router.add_post("/api/v1/officers/{officer_id}/shifts", add_shift)
    app.router.add_post("/api/v1/units", create_unit)

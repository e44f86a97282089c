"""An officer's action on an incident, checked and applied: the same path for the HTTP API and
for the officer app over MQTT."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from core.errors import NotFound, PinganError
from core.incident_model import (
    LEVELS,
    Acknowledge,
    Action,
    Assign,
    IllegalAction,
    IncidentState,
    Note,
    OnScene,
    Resolve,
    TakeOver,
)
from core.incident_service import IncidentService
from schemas.actions import ActionRequest


class Forbidden(PinganError):
    """Outside the officer's jurisdiction (HTTP 403)."""


class Unauthenticated(PinganError):
    """No valid credentials (HTTP 401)."""


@dataclass(frozen=True, slots=True)
class Officer:
    officer_id: str
    unit_code: str
    unit_level: str
    role: str
    name: str

    @property
    def level_index(self) -> int:
        return LEVELS.index(self.unit_level)


async def load_officer(conn: asyncpg.Connection[Any], officer_id: str) -> Officer | None:
    row = await conn.fetchrow(
        "SELECT o.officer_id, o.unit_code, u.level, o.role, o.name FROM officers o "
        "JOIN units u ON u.code = o.unit_code WHERE o.officer_id = $1 AND o.active",
        officer_id,
    )
    if row is None:
        return None
    return Officer(row["officer_id"], row["unit_code"], row["level"], row["role"], row["name"])


async def covers(conn: asyncpg.Connection[Any], unit_code: str, grid_code: str) -> bool:
    """Whether `unit_code` is the grid cell itself or one of its ancestors."""
    return bool(await conn.fetchval("SELECT $1 = ANY(path) FROM units WHERE code = $2", unit_code, grid_code))


def parse_incident_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise NotFound(f"no incident {raw!r}") from exc


async def perform(
    conn: asyncpg.Connection[Any],
    service: IncidentService,
    officer: Officer,
    incident_id: uuid.UUID,
    req: ActionRequest,
    now: datetime,
) -> IncidentState:
    """Check jurisdiction, build the state machine's action, apply it. Runs in the caller's
    transaction. Raises NotFound, Forbidden or IllegalAction."""
    grid_code = await conn.fetchval("SELECT grid_code FROM incidents WHERE incident_id = $1", incident_id)
    if grid_code is None:
        raise NotFound(f"no incident {incident_id}")
    if not await covers(conn, officer.unit_code, grid_code):
        raise Forbidden(f"incident {incident_id} is outside the jurisdiction of {officer.unit_code}")
    action: Action
    actor = officer.officer_id
    match req.action:
        case "acknowledge":
            action = Acknowledge(actor, officer.level_index)
        case "on_scene":
            action = OnScene(actor, officer.level_index)
        case "resolve":
            action = Resolve(actor, req.outcome or "resolved", req.referral, req.text or "")
        case "note":
            action = Note(actor, req.text or "")
        case "take_over":
            action = TakeOver(actor, officer.level_index)
        case "assign":
            if not req.assignee:
                raise IllegalAction("assignee_missing", "assign needs an assignee")
            assignee = await load_officer(conn, req.assignee)
            if assignee is None:
                raise IllegalAction("unknown_assignee", f"no active officer {req.assignee!r}")
            if not await covers(conn, assignee.unit_code, grid_code):
                raise IllegalAction("assignee_outside", f"{req.assignee} has no jurisdiction over this incident")
            action = Assign(actor, assignee.officer_id, assignee.level_index)
    _, state = await service.perform(conn, incident_id, action, now, change=req.action)
    return state

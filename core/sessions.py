"""Officer bearer tokens: issued once, stored only as a SHA-256, expiring."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from core.officer_actions import Officer, load_officer


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def issue(conn: asyncpg.Connection[Any], officer_id: str, *, ttl: timedelta, now: datetime) -> str:
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO officer_sessions (token_sha256, officer_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        _digest(token),
        officer_id,
        now,
        now + ttl,
    )
    return token


async def authenticate(conn: asyncpg.Connection[Any], token: str, *, now: datetime) -> Officer | None:
    officer_id = await conn.fetchval(
        "SELECT officer_id FROM officer_sessions WHERE token_sha256 = $1 AND revoked_at IS NULL AND expires_at > $2",
        _digest(token),
        now,
    )
    if officer_id is None:
        return None
    return await load_officer(conn, officer_id)


async def revoke(conn: asyncpg.Connection[Any], token: str, *, now: datetime) -> bool:
    done = await conn.fetchval(
        "UPDATE officer_sessions SET revoked_at = $2 WHERE token_sha256 = $1 AND revoked_at IS NULL RETURNING true",
        _digest(token),
        now,
    )
    return bool(done)


async def sign_in(
    conn: asyncpg.Connection[Any], officer_id: str, password: str, *, ttl: timedelta, now: datetime
) -> tuple[str, Officer] | None:
    """A new session for the right password of an active officer; None otherwise."""
    from core.passwords import verify

    encoded = await conn.fetchval("SELECT password_hash FROM officers WHERE officer_id = $1 AND active", officer_id)
    if not verify(password, encoded):
        return None
    officer = await load_officer(conn, officer_id)
    if officer is None:
        return None
    return await issue(conn, officer_id, ttl=ttl, now=now), officer

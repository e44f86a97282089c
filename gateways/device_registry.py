"""Looks devices up in Postgres for the validator."""

from __future__ import annotations

from typing import Any

import asyncpg

from core import db
from gateways.validation import DeviceInfo


class PostgresDeviceLookup:
    def __init__(self, pool: asyncpg.Pool[Any]) -> None:
        self._pool = pool

    async def __call__(self, device_id: str) -> DeviceInfo | None:
        async with db.acquire(self._pool) as conn:
            row = await conn.fetchrow(
                "SELECT device_id, grid_code, active FROM devices WHERE device_id = $1", device_id
            )
        if row is None:
            return None
        return DeviceInfo(row["device_id"], row["grid_code"], row["active"])

    async def page(self, after: str, limit: int) -> list[DeviceInfo]:
        """Up to `limit` devices with an id after `after`, in id order (the registry read in
        pages, one short statement each)."""
        async with db.acquire(self._pool) as conn:
            rows = await conn.fetch(
                "SELECT device_id, grid_code, active FROM devices WHERE device_id > $1 ORDER BY device_id LIMIT $2",
                after,
                limit,
            )
        return [DeviceInfo(r["device_id"], r["grid_code"], r["active"]) for r in rows]

    async def many(self, device_ids: list[str]) -> dict[str, DeviceInfo]:
        async with db.acquire(self._pool) as conn:
            rows = await conn.fetch(
                "SELECT device_id, grid_code, active FROM devices WHERE device_id = ANY($1::text[])", device_ids
            )
        return {r["device_id"]: DeviceInfo(r["device_id"], r["grid_code"], r["active"]) for r in rows}

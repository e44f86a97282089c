"""The database's default incident id is a version 7 UUID too (migration 0017): the incidents
opened one at a time get the same kind of id as the worker's batches (core/ids.py)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

pytestmark = pytest.mark.stack


async def test_the_default_id_is_version_7_and_sorts_by_time(env) -> None:  # type: ignore[no-untyped-def]
    before = int(time.time() * 1000)
    first = await env.pool.fetchval("SELECT pingan_uuid7()")
    await asyncio.sleep(0.003)
    later = await env.pool.fetchval("SELECT pingan_uuid7()")
    after = int(time.time() * 1000)
    for u in (first, later):
        assert isinstance(u, uuid.UUID)
        assert u.version == 7, u
        assert u.variant == uuid.RFC_4122, u
        assert before - 5 <= u.int >> 80 <= after + 5  # the same clock, give or take a few ms
    assert first < later
    assert (
        await env.pool.fetchval(
            "SELECT column_default FROM information_schema.columns "
            "WHERE table_name = 'incidents' AND column_name = 'incident_id'"
        )
        == "pingan_uuid7()"
    )

"""HTTP ingest for integrators, on the real stack."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.mqtt_clients import event_payload


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


pytestmark = pytest.mark.stack

GRID = "990102002002001"


@pytest.fixture(scope="module")
async def http(pipeline) -> Any:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{pipeline.ingest.port}") as s:
        yield s


async def until(fn: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = await fn()
        if v:
            return v
        await asyncio.sleep(0.1)
    raise TimeoutError


async def test_integrator_posts_a_press_and_an_incident_opens(env, pipeline, http) -> None:
    dev = await env.add_device(GRID)
    auth = basic(dev.device_id, dev.password)
    body = event_payload(dev.device_id)
    async with http.post(f"/api/v1/devices/{dev.device_id}/events", data=orjson.dumps(body), headers=auth) as r:
        assert r.status == 202, await r.text()
        receipt = await r.json()
    assert receipt["status"] == "accepted" and receipt["event_id"] == body["event_id"]
    # Kafka held it before the answer: the worker records it and opens an incident.
    row = await until(lambda: env.pool.fetchrow("SELECT * FROM incidents WHERE device_id = $1", dev.device_id))
    assert row["event_type"] == "alarm.panic"
    ev = await env.pool.fetchrow("SELECT ingress FROM events WHERE device_id = $1", dev.device_id)
    assert ev["ingress"] == "http"
    # The same event again takes effect once.
    async with http.post(f"/api/v1/devices/{dev.device_id}/events", data=orjson.dumps(body), headers=auth) as r:
        assert r.status == 202
    await asyncio.sleep(1.0)
    assert await env.pool.fetchval("SELECT count(*) FROM events WHERE device_id = $1", dev.device_id) == 1


async def test_only_the_device_itself_with_its_password(env, pipeline, http) -> None:
    a = await env.add_device(GRID)
    b = await env.add_device(GRID)
    body = orjson.dumps(event_payload(b.device_id))
    async with http.post(f"/api/v1/devices/{b.device_id}/events", data=body) as r:
        assert r.status == 401
    async with http.post(
        f"/api/v1/devices/{b.device_id}/events", data=body, headers=basic(b.device_id, "wrong-password")
    ) as r:
        assert r.status == 401
    async with http.post(
        f"/api/v1/devices/{b.device_id}/events", data=body, headers=basic(a.device_id, a.password)
    ) as r:
        assert r.status == 403
    await asyncio.sleep(0.5)
    assert await env.pool.fetchval("SELECT count(*) FROM events WHERE device_id = $1", b.device_id) == 0


@pytest.mark.parametrize(
    ("reason", "make"),
    [
        ("malformed", lambda d: b'{"event_id": "x",'),
        ("too_large", lambda d: orjson.dumps(event_payload(d, data={"pad": "x" * 5000}))),
        ("device_mismatch", lambda d: orjson.dumps(event_payload("someone-else"))),
        ("unknown_type", lambda d: orjson.dumps(event_payload(d, "alarm.meteor"))),
        ("invalid", lambda d: orjson.dumps(event_payload(d, data={"note": "nul \x00 inside"}))),
        ("malformed", lambda d: orjson.dumps(event_payload(d, data={"note": "@"})).replace(b"@", b"\xff")),
    ],
)
async def test_bad_input_is_refused_with_its_reason_and_kept(env, pipeline, http, reason: str, make: Any) -> None:
    dev = await env.add_device(GRID)
    payload = make(dev.device_id)
    async with http.post(
        f"/api/v1/devices/{dev.device_id}/events", data=payload, headers=basic(dev.device_id, dev.password)
    ) as r:
        assert r.status == 422
        body = await r.json()
    assert body["status"] == "rejected" and body["reason"] == reason and body["detail"]
    rec = await until(
        lambda: env.pool.fetchrow(
            "SELECT * FROM rejected_inputs WHERE device_id = $1 AND reason = $2", dev.device_id, reason
        )
    )
    assert rec["ingress"] == "http" and rec["payload_bytes"] == len(payload)

"""The duty desk's API: sign-in, the queue, devices, units, the live WebSocket, /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from dispatch.demo_city import DEMO_OFFICER_PASSWORD
from schemas import topics
from tests.support.mqtt_clients import device_client, event_payload

pytestmark = pytest.mark.stack

GRID = "990103001001002"
OTHER_GRID = "990104002002002"


@pytest.fixture(scope="module")
async def http(pipeline) -> Any:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{pipeline.api.port}") as s:
        yield s


async def sign_in(pipeline, officer_id: str) -> aiohttp.ClientSession:  # type: ignore[no-untyped-def]
    # unsafe: keep cookies set by an IP-address host, as a browser does
    s = aiohttp.ClientSession(
        base_url=f"http://127.0.0.1:{pipeline.api.port}", cookie_jar=aiohttp.CookieJar(unsafe=True)
    )
    async with s.post("/api/v1/auth/sign-in", json={"officer_id": officer_id, "password": DEMO_OFFICER_PASSWORD}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
    assert body["officer"]["officer_id"] == officer_id and "password" not in orjson.dumps(body).decode()
    return s


async def press(env, grid: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    dev = await env.add_device(grid)
    device = await device_client(env.settings, dev.device_id, dev.password)
    try:
        await device.client.publish(
            topics.device_events(dev.device_id), orjson.dumps(event_payload(dev.device_id)), qos=1
        )
        _, opened = await device.wait_for(lambda r: r["status"] == "incident_opened", timeout=5)
    finally:
        await device.close()
    return opened


ROUTES = [
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/incidents"),
    ("GET", "/api/v1/units"),
    ("GET", "/api/v1/devices"),
    ("GET", "/api/v1/stats/response-times"),
    ("GET", "/api/v1/incidents/00000000-0000-0000-0000-000000000000"),
    ("POST", "/api/v1/incidents/00000000-0000-0000-0000-000000000000/actions"),
    ("GET", "/api/v1/ws"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_route_needs_a_session(pipeline, http, method: str, path: str) -> None:
    async with http.request(method, path, json={"action": "note", "text": "x"}) as r:
        assert r.status == 401
        assert (await r.json())["code"] == "unauthenticated"


async def test_sign_in_refuses_wrong_password_and_unknown_officer_alike(pipeline, http) -> None:
    for body in (
        {"officer_id": f"go-{GRID}", "password": "wrong-password"},
        {"officer_id": "nobody", "password": DEMO_OFFICER_PASSWORD},
    ):
        async with http.post("/api/v1/auth/sign-in", json=body) as r:
            assert r.status == 401
            assert (await r.json())["code"] == "bad_credentials"
    async with http.post("/api/v1/auth/sign-in", json={"officer_id": "x"}) as r:
        assert r.status == 422


async def test_sign_out_ends_the_session(pipeline) -> None:
    s = await sign_in(pipeline, f"go-{GRID}")
    try:
        async with s.get("/api/v1/me") as r:
            assert r.status == 200
        async with s.post("/api/v1/auth/sign-out") as r:
            assert r.status == 204
        async with s.get("/api/v1/me") as r:
            assert r.status == 401
    finally:
        await s.close()


async def test_queue_shows_own_jurisdiction_by_priority_then_age(env, pipeline) -> None:
    mine = await press(env, GRID)
    theirs = await press(env, OTHER_GRID)
    grid_officer = await sign_in(pipeline, f"go-{GRID}")
    city = await sign_in(pipeline, "do-990100-1")
    try:
        async with grid_officer.get("/api/v1/incidents") as r:
            items = (await r.json())["items"]
        ids = {i["incident_id"] for i in items}
        assert mine["incident_id"] in ids and theirs["incident_id"] not in ids
        row = next(i for i in items if i["incident_id"] == mine["incident_id"])
        assert row["grid_name"] and row["address"] and row["device_kind"] == "panic_button"
        async with city.get("/api/v1/incidents") as r:
            items = (await r.json())["items"]
        assert {mine["incident_id"], theirs["incident_id"]} <= {i["incident_id"] for i in items}
        keys = [(i["priority"], i["opened_at"]) for i in items]
        assert keys == sorted(keys)
        async with grid_officer.get(f"/api/v1/incidents/{theirs['incident_id']}") as r:
            assert r.status == 403
        async with grid_officer.get("/api/v1/incidents", params={"unit": OTHER_GRID}) as r:
            assert r.status == 403
        async with grid_officer.get("/api/v1/incidents", params={"limit": "zero"}) as r:
            assert r.status == 422
        async with city.get(f"/api/v1/incidents/{mine['incident_id']}") as r:
            inc = await r.json()
        assert inc["device_history"] and inc["timeline"] and inc["notifications"]
    finally:
        await grid_officer.close()
        await city.close()


async def test_devices_and_units_are_scoped(env, pipeline) -> None:
    s = await sign_in(pipeline, f"do-{GRID[:12]}-1")
    try:
        async with s.get("/api/v1/units") as r:
            units = (await r.json())["items"]
        assert {u["code"] for u in units} == {GRID[:12]} | {f"{GRID[:12]}{i:03d}" for i in (1, 2, 3)}
        async with s.get("/api/v1/devices", params={"state": "all", "limit": "2000"}) as r:
            devices = (await r.json())["items"]
        assert devices and all(d["grid_code"].startswith(GRID[:12]) for d in devices)
        async with s.get("/api/v1/devices", params={"state": "sideways"}) as r:
            assert r.status == 422
    finally:
        await s.close()


async def test_websocket_pushes_new_incidents_within_a_second_and_catches_up(env, pipeline) -> None:
    s = await sign_in(pipeline, f"do-{GRID[:12]}-1")
    try:
        ws = await s.ws_connect("/api/v1/ws")
        hello = orjson.loads((await ws.receive()).data)
        assert hello["type"] == "hello"
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        opened = await press(env, GRID)
        got = None
        while got is None:
            msg = orjson.loads((await asyncio.wait_for(ws.receive(), 5)).data)
            if msg["type"] == "incident" and msg["incident"]["incident_id"] == opened["incident_id"]:
                got = msg["incident"]
        assert loop.time() - t0 < 3.0
        cursor = got["updated_at"]
        await ws.close()
        # While the page is away, an officer acknowledges; on reconnect it catches up.
        officer = await sign_in(pipeline, f"go-{GRID}")
        async with officer.post(
            f"/api/v1/incidents/{opened['incident_id']}/actions", json={"action": "acknowledge"}
        ) as r:
            assert r.status == 200
        await officer.close()
        ws = await s.ws_connect("/api/v1/ws", params={"since": cursor})
        seen = []
        while True:
            msg = orjson.loads((await asyncio.wait_for(ws.receive(), 5)).data)
            if msg["type"] == "caught_up":
                break
            if msg["type"] == "incident":
                seen.append(msg["incident"])
        mine = [i for i in seen if i["incident_id"] == opened["incident_id"]]
        assert mine and mine[-1]["status"] == "acknowledged"
        await ws.close()
    finally:
        await s.close()


async def test_metrics(pipeline, http) -> None:
    async with http.get("/metrics") as r:
        assert r.status == 200
        text = await r.text()
    assert 'pingan_component_events_total{component="gateway",name="accepted"}' in text
    assert "pingan_notifications_pending" in text


async def test_administrators_manage_officers_rosters_and_units(env, pipeline) -> None:
    admin = await sign_in(pipeline, "admin-990100")
    grid_officer = await sign_in(pipeline, f"go-{GRID}")
    try:
        new = {"officer_id": "go-new-1", "unit_code": GRID, "name": "新网格员", "role": "grid_officer"}
        async with grid_officer.post("/api/v1/officers", json=new) as r:
            assert r.status == 403
        async with admin.post("/api/v1/officers", json={**new, "role": "duty_officer"}) as r:
            assert r.status == 422
        async with admin.post("/api/v1/officers", json={**new, "extra": 1}) as r:
            assert r.status == 422
        async with admin.post("/api/v1/officers", json=new) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
        async with admin.post("/api/v1/officers", json=new) as r:
            assert r.status == 409
        password = created["password"]
        s = aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{pipeline.api.port}", cookie_jar=aiohttp.CookieJar(unsafe=True)
        )
        try:
            async with s.post("/api/v1/auth/sign-in", json={"officer_id": "go-new-1", "password": password}) as r:
                assert r.status == 200
            async with admin.post(
                "/api/v1/officers/go-new-1/shifts",
                json={"starts_at": "2026-01-01T00:00:00+08:00", "ends_at": "2027-01-01T00:00:00+08:00"},
            ) as r:
                assert r.status == 201
            async with s.get("/api/v1/officers/go-new-1/shifts") as r:
                assert len((await r.json())["items"]) == 1
            async with admin.patch("/api/v1/officers/go-new-1", json={"active": False}) as r:
                assert r.status == 200 and (await r.json())["officer"]["active"] is False
            async with s.get("/api/v1/me") as r:
                assert r.status == 401  # deactivation ends the officer's sessions
        finally:
            await s.close()
        async with admin.post(
            "/api/v1/units",
            json={"code": f"{GRID[:12]}009", "level": "grid", "parent_code": GRID[:12], "name": "第9网格"},
        ) as r:
            assert r.status == 201, await r.text()
        async with admin.post(
            "/api/v1/units", json={"code": f"{GRID[:12]}010", "level": "street", "parent_code": GRID[:12], "name": "x"}
        ) as r:
            assert r.status == 422
        async with grid_officer.get("/api/v1/officers") as r:
            officers = (await r.json())["items"]
        assert {o["officer_id"] for o in officers} == {f"go-{GRID}", "go-new-1"}  # its own cell only
    finally:
        await admin.close()
        await grid_officer.close()

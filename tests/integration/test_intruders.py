"""Intruders on the real stack: the broker refuses strangers and devices acting as others; every
API route refuses a request without a session (401) and outside the officer's jurisdiction
(403); sessions end when they expire or are signed out; passwords never reach a log or an
answer; injected SQL and script in every text field are stored and returned verbatim."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from core.mqtt import MqttClient, MqttConnectError, MqttPublishError
from core.sessions import issue
from core.timeutil import utcnow
from dispatch.api.app import build_app
from dispatch.credentials import add_device, sync_broker_credentials
from dispatch.demo_city import DEMO_OFFICER_PASSWORD
from schemas import topics
from tests.conftest import REPO
from tests.support.mqtt_clients import device_client, event_payload
from tests.support.waiting import wait_until

pytestmark = pytest.mark.stack

GRID = "990103001001003"  # district 990103
OTHER_GRID = "990104001001003"  # district 990104
OTHER_DISTRICT = "990104"


async def connect(env: Any, dev: Any, *, receipts: bool = True) -> Any:
    for _ in range(50):  # the broker reloads its accounts a moment after a device is added
        try:
            return await device_client(env.settings, dev.device_id, dev.password, receipts=receipts)
        except MqttConnectError:
            await asyncio.sleep(0.1)
    return await device_client(env.settings, dev.device_id, dev.password, receipts=receipts)


def raw_client(env: Any, username: str | None, password: str | None) -> MqttClient:
    return MqttClient(
        host=env.settings.mqtt_host,
        port=env.settings.mqtt_port,
        client_id=f"intruder-{uuid.uuid4().hex[:8]}",
        username=username,
        password=password,
        reconnect=False,
        name="test.intruder",
    )


# -- the broker ---------------------------------------------------------------------------------


async def test_anonymous_unknown_and_wrong_password_clients_cannot_connect(env, pipeline) -> None:
    dev = await env.add_device(GRID)
    await (await connect(env, dev)).close()  # the right password does
    for username, password in ((None, None), ("", ""), ("ghost-device", "x"), (dev.device_id, "wrong-password")):
        client = raw_client(env, username, password)
        with pytest.raises(MqttConnectError) as err:
            await client.start(timeout=5)
        assert err.value.reason_code in (0x86, 0x87), (username, err.value)
        await client.stop()


async def test_a_device_cannot_write_or_read_for_another(env, pipeline) -> None:
    a = await env.add_device(GRID)
    b = await env.add_device(GRID)
    mallory = await connect(env, a)
    victim = await connect(env, b)
    try:
        for topic in (
            topics.device_events(b.device_id),
            topics.device_status(b.device_id),
            topics.device_receipts(b.device_id),  # a forged receipt
            topics.device_receipts(a.device_id),  # receipts come from the platform only
            topics.officer_notifications(f"go-{GRID}"),
            f"pingan/v1/officers/go-{GRID}/actions",
            "pingan/v1/anything",
        ):
            with pytest.raises(MqttPublishError) as err:
                await mallory.client.publish(topic, orjson.dumps(event_payload(b.device_id)), qos=1)
            assert err.value.reason_code == 135, topic
        # Subscribing to another device's receipts, or to everything, delivers nothing of theirs.
        for sub in (topics.device_receipts(b.device_id), "pingan/#", "#"):
            try:
                await mallory.client.subscribe(sub, qos=1)
            except Exception:  # noqa: BLE001 - a refused subscription is as good
                pass
        body = event_payload(b.device_id)
        await victim.client.publish(topics.device_events(b.device_id), orjson.dumps(body), qos=1)
        await victim.wait_for(lambda r: r["status"] == "incident_opened" and r["event_id"] == body["event_id"])
        await asyncio.sleep(0.5)
        leaked = [m.topic for m in mallory.messages if not m.topic.startswith(topics.device_receipts(a.device_id))]
        assert leaked == []
    finally:
        await mallory.close()
        await victim.close()


# -- the API: every route -----------------------------------------------------------------------

PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    ("POST", "/api/v1/auth/sign-in"),
    ("POST", "/api/v1/auth/sign-out"),
    # The desk's pages are static files; their data comes from the API.
    ("GET", "/"),
    ("GET", "/login"),
    ("GET", "/queue"),
    ("GET", "/incidents/{incident_id}"),
    ("GET", "/stats"),
    ("GET", "/devices"),
    ("GET", "/static/"),
}

# Routes that answer with the caller's own data or list only their jurisdiction: there is no
# "outside" to ask for; the test checks what comes back lies inside.
SCOPED = {
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/units"),
    ("GET", "/api/v1/officers"),
    ("GET", "/api/v1/ws"),
}


def api_routes() -> set[tuple[str, str]]:
    """Every (method, path) the API serves, read from its router: a new route is covered here
    (and must be classified below) without anyone remembering to add it."""
    from core.settings import Settings

    app = build_app(Settings(), None)  # type: ignore[arg-type]  # routes only, nothing runs
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("formatter") or info.get("path") or (info.get("prefix", "") + "/")
        out.add((route.method, path))
    return out


def concrete(path: str) -> str:
    return path.replace("{incident_id}", str(uuid.uuid4())).replace("{officer_id}", f"go-{OTHER_GRID}")


@pytest.fixture(scope="module")
async def api(pipeline) -> Any:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{pipeline.api.port}") as s:
        yield s


async def token_for(env: Any, officer_id: str, ttl: timedelta = timedelta(hours=1)) -> dict[str, str]:
    async with env.pool.acquire() as conn:
        token = await issue(conn, officer_id, ttl=ttl, now=utcnow())
    return {"Authorization": f"Bearer {token}"}


async def test_every_route_without_a_valid_session_is_401(env, pipeline, api) -> None:
    routes = api_routes() - PUBLIC
    assert len(routes) >= 14, routes
    expired = await token_for(env, f"go-{GRID}", ttl=timedelta(microseconds=1))
    revoked = await token_for(env, f"go-{GRID}")
    async with api.post("/api/v1/auth/sign-out", headers=revoked) as r:
        assert r.status == 204
    for method, path in sorted(routes):
        for headers in (
            {},
            {"Authorization": "Bearer not-a-token"},
            {"Authorization": "Basic Z28tOTkwMTAzMDAxMDAxMDAzOnBpbmdhbi1kZW1v"},
            {"Cookie": "pingan_session=forged"},
            expired,
            revoked,
        ):
            async with api.request(method, concrete(path), json={"action": "note", "text": "x"}, headers=headers) as r:
                assert r.status == 401, (method, path, headers, r.status)
                body = await r.json()
                assert body["code"] == "unauthenticated" and body["message"]


def outside_cases(other_incident: str) -> dict[tuple[str, str], tuple[str, str, dict[str, Any] | None]]:
    """For each route that acts on something named in the request: a request naming something
    outside the jurisdiction of a district administrator of 990103."""
    return {
        ("GET", "/api/v1/incidents"): ("GET", f"/api/v1/incidents?unit={OTHER_GRID}", None),
        ("GET", "/api/v1/incidents/{incident_id}"): ("GET", f"/api/v1/incidents/{other_incident}", None),
        ("POST", "/api/v1/incidents/{incident_id}/actions"): (
            "POST",
            f"/api/v1/incidents/{other_incident}/actions",
            {"action": "note", "text": "x"},
        ),
        ("GET", "/api/v1/stats/response-times"): ("GET", f"/api/v1/stats/response-times?unit={OTHER_DISTRICT}", None),
        ("GET", "/api/v1/devices"): ("GET", f"/api/v1/devices?unit={OTHER_GRID}", None),
        ("POST", "/api/v1/officers"): (
            "POST",
            "/api/v1/officers",
            {"officer_id": "go-intruder", "unit_code": OTHER_GRID, "name": "x", "role": "grid_officer"},
        ),
        ("PATCH", "/api/v1/officers/{officer_id}"): ("PATCH", f"/api/v1/officers/go-{OTHER_GRID}", {"active": False}),
        ("GET", "/api/v1/officers/{officer_id}/shifts"): ("GET", f"/api/v1/officers/go-{OTHER_GRID}/shifts", None),
        ("POST", "/api/v1/officers/{officer_id}/shifts"): (
            "POST",
            f"/api/v1/officers/go-{OTHER_GRID}/shifts",
            {"starts_at": "2026-01-01T00:00:00+08:00", "ends_at": "2026-01-02T00:00:00+08:00"},
        ),
        ("POST", "/api/v1/units"): (
            "POST",
            "/api/v1/units",
            {"code": f"{OTHER_GRID[:12]}009", "level": "grid", "parent_code": OTHER_GRID[:12], "name": "x"},
        ),
    }


async def test_every_route_outside_the_jurisdiction_is_403(env, pipeline, api) -> None:
    # A district administrator (990103), made by the city's administrator.
    city = await token_for(env, "admin-990100")
    async with api.post(
        "/api/v1/officers",
        json={"officer_id": "admin-990103-t", "unit_code": "990103", "name": "区管理员", "role": "admin"},
        headers=city,
    ) as r:
        assert r.status == 201, await r.text()
    district = await token_for(env, "admin-990103-t")
    # An incident in the other district.
    dev = await env.add_device(OTHER_GRID)
    client = await connect(env, dev)
    try:
        await client.client.publish(topics.device_events(dev.device_id), orjson.dumps(event_payload(dev.device_id)))
        _, opened = await client.wait_for(lambda r: r["status"] == "incident_opened")
    finally:
        await client.close()
    cases = outside_cases(opened["incident_id"])
    routes = api_routes() - PUBLIC
    unclassified = routes - set(cases) - SCOPED
    assert not unclassified, f"classify these routes in this test: {sorted(unclassified)}"
    for key, (method, path, body) in sorted(cases.items()):
        async with api.request(method, path, json=body, headers=district) as r:
            assert r.status == 403, (key, r.status, await r.text())
            assert (await r.json())["code"] == "forbidden"
    # Administrators' routes refuse a grid officer of the very unit, too.
    grid = await token_for(env, f"go-{GRID}")
    for method, path, body in (
        ("POST", "/api/v1/officers", {"officer_id": "go-x", "unit_code": GRID, "name": "x", "role": "grid_officer"}),
        ("PATCH", f"/api/v1/officers/go-{GRID}", {"role": "admin"}),
        (
            "POST",
            f"/api/v1/officers/go-{GRID}/shifts",
            {"starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-02T00:00:00Z"},
        ),
        ("POST", "/api/v1/units", {"code": f"{GRID[:12]}009", "level": "grid", "parent_code": GRID[:12], "name": "x"}),
    ):
        async with api.request(method, path, json=body, headers=grid) as r:
            assert r.status == 403, (method, path, r.status)
    # The scoped lists hold only the jurisdiction.
    async with api.get("/api/v1/units", headers=district) as r:
        assert all(u["code"].startswith("990103") for u in (await r.json())["items"])
    async with api.get("/api/v1/officers", headers=district) as r:
        assert all(o["unit_code"].startswith("990103") for o in (await r.json())["items"])
    async with api.get("/api/v1/incidents", headers=district) as r:
        assert opened["incident_id"] not in {i["incident_id"] for i in (await r.json())["items"]}
    async with api.get("/api/v1/me", headers=district) as r:
        assert (await r.json())["officer_id"] == "admin-990103-t"
    ws = await api.ws_connect("/api/v1/ws", headers=district, params={"since": "2026-01-01T00:00:00+00:00"})
    try:
        seen = []
        while True:
            msg = orjson.loads((await asyncio.wait_for(ws.receive(), 5)).data)
            if msg["type"] == "caught_up":
                break
            if msg["type"] == "incident":
                seen.append(msg["incident"]["grid_code"])
        assert all(g.startswith("990103") for g in seen)
    finally:
        await ws.close()


async def test_sessions_expire_and_sign_out_holds(env, pipeline, api) -> None:
    short = await token_for(env, f"go-{GRID}", ttl=timedelta(seconds=1))
    other = await token_for(env, f"go-{GRID}")
    async with api.get("/api/v1/me", headers=short) as r:
        assert r.status == 200
    await asyncio.sleep(1.2)
    async with api.get("/api/v1/me", headers=short) as r:
        assert r.status == 401
    # Signing out ends that session only; the token is dead for the API and the WebSocket.
    async with api.post("/api/v1/auth/sign-out", headers=other) as r:
        assert r.status == 204
    async with api.get("/api/v1/me", headers=other) as r:
        assert r.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await api.ws_connect("/api/v1/ws", headers=other)
    assert err.value.status == 401
    async with api.post("/api/v1/auth/sign-out", headers=other) as r:  # twice is harmless
        assert r.status == 204
    # A new password ends every session of the officer.
    third = await token_for(env, f"go-{GRID}")
    async with env.pool.acquire() as conn:
        await conn.execute(
            "UPDATE officer_sessions SET revoked_at = now() WHERE officer_id = $1 AND revoked_at IS NULL", f"go-{GRID}"
        )
    async with api.get("/api/v1/me", headers=third) as r:
        assert r.status == 401


# -- passwords ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_passwords_are_never_logged_or_returned(env, pipeline, tmp_path) -> None:
    """The API and the command line in their own processes at debug level: whatever they log
    while passwords are set, used right and wrong, and handed out, never holds one."""
    port = free_port()
    child_env = {**os.environ, **env.settings.to_env(), "PINGAN_LOG_LEVEL": "debug", "PINGAN_HTTP_PORT": str(port)}
    cli = [sys.executable, "-m", "dispatch.cli"]
    secrets: list[str] = [DEMO_OFFICER_PASSWORD, "wrong-Pa55word-xyz", env.settings.mqtt_password]
    logs: list[str] = []

    def run(*args: str) -> str:
        p = subprocess.run([*cli, *args], env=child_env, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        logs.append(p.stderr)
        return p.stdout

    printed = orjson.loads(run("officer", "password", f"go-{GRID}"))
    secrets.append(printed["password"])
    assert "$argon2" not in orjson.dumps(printed).decode()
    device_out = run("device", "add", "--grid", GRID, "--kind", "pendant", "--address", "x")
    secrets += re.findall(r'"password":\s*"([^"]+)"', device_out) or [device_out.split()[-1]]
    api_log = tmp_path / "api.log"
    with api_log.open("wb") as fh:
        api_proc = await asyncio.create_subprocess_exec(*cli, "api", env=child_env, cwd=REPO, stderr=fh)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as s:

            async def up() -> bool:
                try:
                    async with s.get("/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_until(up, timeout=30, interval=0.2)
            answers: list[str] = []
            for officer, password in ((f"go-{GRID}", printed["password"]), (f"go-{GRID}", "wrong-Pa55word-xyz")):
                async with s.post("/api/v1/auth/sign-in", json={"officer_id": officer, "password": password}) as r:
                    answers.append(await r.text())
            token = orjson.loads(answers[0])["token"]
            auth = {"Authorization": f"Bearer {await _admin_token(env)}"}
            async with s.post(
                "/api/v1/officers",
                json={"officer_id": "go-pw-1", "unit_code": GRID, "name": "x", "role": "grid_officer"},
                headers=auth,
            ) as r:
                created = await r.json()
            secrets.append(created["password"])  # shown once, in this answer only
            for path in ("/api/v1/officers", "/api/v1/me", "/api/v1/officers/go-pw-1/shifts"):
                async with s.get(path, headers={"Authorization": f"Bearer {token}"}) as r:
                    answers.append(await r.text())
            async with s.patch("/api/v1/officers/go-pw-1", json={"name": "y"}, headers=auth) as r:
                answers.append(await r.text())
    finally:
        api_proc.terminate()
        await asyncio.wait_for(api_proc.wait(), 30)
        logs.append(api_log.read_text(encoding="utf-8", errors="replace"))
    text = "\n".join(logs)
    assert "signed in" in text and "sign-in refused" in text  # the logs were on, at debug level
    for secret in secrets:
        assert secret and secret not in text, f"a password reached a log: {secret[:3]}..."
        for answer in answers:
            assert secret not in answer
    for answer in answers:
        assert '"password"' not in answer and "hash" not in answer and "$argon2" not in answer


async def _admin_token(env: Any) -> str:
    async with env.pool.acquire() as conn:
        return await issue(conn, "admin-990100", ttl=timedelta(minutes=10), now=utcnow())


# -- injection ------------------------------------------------------------------------------------

HOSTILE = [
    "'; DROP TABLE events; --",
    "' OR '1'='1",
    "Robert'); DELETE FROM incidents; --",
    '<img src=x onerror="window.__xss=1">',
    "<script>alert(1)</script>",
    '"><svg onload=alert(1)>',
    "\\'\\\"\\\\ $1 $$ %s {0} ${x}",
    "\u202e\u0645\u0631\u062d\u0628\u0627 😀 平安",
]


async def test_injected_sql_and_script_are_stored_and_returned_verbatim(env, pipeline, api) -> None:
    admin = {"Authorization": f"Bearer {await _admin_token(env)}"}
    officer = await token_for(env, f"go-{GRID}")
    for i, text in enumerate(HOSTILE):
        # Device fields (provisioning), seen in the queue row.
        device_id = f"inj-{uuid.uuid4().hex[:10]}"
        async with env.pool.acquire() as conn:
            p = await add_device(
                conn, device_id=device_id, grid_code=GRID, kind="pendant", address=text, resident_note=text
            )
            await sync_broker_credentials(conn, env.settings)
        await env.broker_knows(device_id, p.password)
        client = await connect(env, p)
        try:
            await client.client.publish(topics.device_events(device_id), orjson.dumps(event_payload(device_id)))
            _, opened = await client.wait_for(lambda r: r["status"] == "incident_opened")
        finally:
            await client.close()
        incident = opened["incident_id"]
        # Notes and the closing text.
        url = f"/api/v1/incidents/{incident}/actions"
        async with api.post(url, json={"action": "note", "text": text}, headers=officer) as r:
            assert r.status == 200, await r.text()
        async with api.post(
            url, json={"action": "resolve", "outcome": "false_alarm", "text": text}, headers=officer
        ) as r:
            assert r.status == 200, await r.text()
        async with api.get(f"/api/v1/incidents/{incident}", headers=officer) as r:
            body = await r.json()
        assert body["address"] == text and body["resident_note"] == text
        details = orjson.dumps([t["detail"] for t in body["timeline"]]).decode()
        assert orjson.dumps(text).decode()[1:-1] in details
        # Names of officers and units (administrators' routes).
        async with api.post(
            "/api/v1/officers",
            json={"officer_id": f"go-inj-{i}", "unit_code": GRID, "name": text[:200], "role": "grid_officer",
                  "phone": text[:40]},
            headers=admin,
        ) as r:  # fmt: skip
            assert r.status == 201, await r.text()
            made = (await r.json())["officer"]
        assert made["name"] == text[:200] and made["phone"] == text[:40]
        async with api.patch(f"/api/v1/officers/go-inj-{i}", json={"name": text}, headers=admin) as r:
            assert (await r.json())["officer"]["name"] == text
        code = f"{GRID[:12]}{100 + i:03d}"
        async with api.post(
            "/api/v1/units",
            json={"code": code, "level": "grid", "parent_code": GRID[:12], "name": text, "name_en": text},
            headers=admin,
        ) as r:
            assert r.status == 201, await r.text()
        async with api.get("/api/v1/units", headers=admin) as r:
            unit = next(u for u in (await r.json())["items"] if u["code"] == code)
        assert unit["name"] == text and unit["name_en"] == text
        async with api.get("/api/v1/devices", params={"unit": GRID, "limit": "2000"}, headers=officer) as r:
            dev_row = next(d for d in (await r.json())["items"] if d["device_id"] == device_id)
        assert dev_row["address"] == text
    # Nothing was dropped or deleted by the texts.
    assert await env.pool.fetchval("SELECT count(*) FROM events") > 0
    assert await env.pool.fetchval("SELECT count(*) FROM incidents") >= len(HOSTILE)


async def test_text_postgres_cannot_hold_is_a_422_with_a_reason(env, pipeline, api) -> None:
    admin = {"Authorization": f"Bearer {await _admin_token(env)}"}
    for method, path, body in (
        ("POST", f"/api/v1/incidents/{uuid.uuid4()}/actions", {"action": "note", "text": "nul \x00"}),
        (
            "POST",
            "/api/v1/officers",
            {"officer_id": "go-nul", "unit_code": GRID, "name": "a\x00", "role": "grid_officer"},
        ),
        (
            "POST",
            "/api/v1/units",
            {"code": f"{GRID[:12]}099", "level": "grid", "parent_code": GRID[:12], "name": "\x00"},
        ),
        ("GET", "/api/v1/incidents?unit=%00", None),
        ("GET", "/api/v1/devices?unit=99%00", None),
        ("GET", "/api/v1/stats/response-times?unit=%00&from=0001-01-01T00:00:00%2B14:00", None),
        ("GET", "/api/v1/stats/response-times?to=0001-01-02T00:00:00Z", None),
        ("GET", "/api/v1/officers/%00/shifts", None),
        ("POST", "/api/v1/auth/sign-in", {"officer_id": "\x00", "password": "x"}),
    ):
        kwargs: dict[str, Any] = {"headers": admin}
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
        async with api.request(method, path, **kwargs) as r:
            assert 400 <= r.status < 500, (method, path, r.status, await r.text())
            answer = await r.json()
            assert answer["code"] and answer["message"]
    async with api.post(
        "/api/v1/auth/sign-in",
        data=b'{"officer_id": "\xff", "password": "x"}',
        headers={"Content-Type": "application/json"},
    ) as r:
        assert r.status == 422 and (await r.json())["code"] == "invalid_body"

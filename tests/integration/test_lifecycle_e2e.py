"""The lifecycle end to end on the real stack: escalation over MQTT, actions over the API and
from the officer app, receipts to the device."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from core.mosquitto_passwords import hash_password
from core.sessions import issue
from core.timeutil import utcnow
from dispatch.credentials import sync_broker_credentials
from schemas import topics
from tests.support.mqtt_clients import Collector, device_client, event_payload, platform_client

pytestmark = pytest.mark.stack

GRID = "990102002001002"
COMMUNITY = GRID[:12]


async def token(env, officer_id: str) -> str:  # type: ignore[no-untyped-def]
    async with env.pool.acquire() as conn:
        return await issue(conn, officer_id, ttl=timedelta(hours=1), now=utcnow())


@pytest.fixture(scope="module")
async def fast_policy(env) -> None:  # type: ignore[no-untyped-def]
    """This grid cell's officer has 2 s to acknowledge a P1 alarm."""
    await env.pool.execute(
        "INSERT INTO escalation_policies (unit_code, priority, levels) VALUES ($1, 1, $2)",
        GRID,
        [
            {"level": "grid", "ack_s": 2, "arrive_s": 600, "remind_s": None},
            {"level": "community", "ack_s": 60, "arrive_s": 600, "remind_s": None},
        ],
    )


@pytest.fixture(scope="module")
async def http(pipeline) -> Any:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{pipeline.api.port}") as s:
        yield s


async def open_incident(env, device: Collector, dev_id: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    body = event_payload(dev_id)
    await device.client.publish(topics.device_events(dev_id), orjson.dumps(body), qos=1)
    _, opened = await device.wait_for(lambda r: r["status"] == "incident_opened", timeout=5)
    return opened


async def wait_notified(env, incident_id: str, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Until the incident's first page is recorded as delivered (an officer acts on a page)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await env.pool.fetchval(
        "SELECT first_notified_at IS NOT NULL FROM incidents WHERE incident_id = $1::uuid", incident_id
    ):
        assert asyncio.get_running_loop().time() < deadline, f"incident {incident_id} not notified in {timeout} s"
        await asyncio.sleep(0.02)


async def test_escalates_over_mqtt_then_acknowledged_over_the_api(env, pipeline, fast_policy, http) -> None:
    dev = await env.add_device(GRID, "pendant")
    device = await device_client(env.settings, dev.device_id, dev.password)
    centre = await platform_client(env.settings, topics.officer_notifications(f"do-{COMMUNITY}-1"))
    try:
        opened = await open_incident(env, device, dev.device_id)
        # Nobody acknowledges: after 2 s the community centre's duty officer is paged, with the reason.
        _, note = await centre.wait_for(
            lambda n: n["incident_id"] == opened["incident_id"] and n["kind"] == "escalated", timeout=6
        )
        assert note["reason"] == "not acknowledged by the grid officer within 2 s"
        assert note["level"] == "community" and note["case_number"] == opened["case_number"]

        tok = await token(env, f"do-{COMMUNITY}-1")
        async with http.post(
            f"/api/v1/incidents/{opened['incident_id']}/actions",
            json={"action": "acknowledge"},
            headers={"Authorization": f"Bearer {tok}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        assert body["status"] == "acknowledged" and body["awaiting"] == "arrival"
        _, receipt = await device.wait_for(lambda r: r["status"] == "acknowledged", timeout=5)
        assert receipt["case_number"] == opened["case_number"]

        async with http.get(
            f"/api/v1/incidents/{opened['incident_id']}", headers={"Authorization": f"Bearer {tok}"}
        ) as resp:
            assert resp.status == 200
            inc = await resp.json()
        kinds = [t["kind"] for t in inc["timeline"]]
        assert kinds[0] == "opened" and "escalated" in kinds and "acknowledged" in kinds
        ack = next(t for t in inc["timeline"] if t["kind"] == "acknowledged")
        assert ack["actor"] == f"do-{COMMUNITY}-1"
        assert inc["ack_level"] == "community"
        assert {n["officer_id"] for n in inc["notifications"]} >= {f"go-{GRID}", f"do-{COMMUNITY}-1"}
    finally:
        await device.close()
        await centre.close()


async def test_api_refuses_without_sign_in_outside_jurisdiction_bad_state_and_bad_body(env, pipeline, http) -> None:
    dev = await env.add_device("990103002002002")
    device = await device_client(env.settings, dev.device_id, dev.password)
    try:
        opened = await open_incident(env, device, dev.device_id)
        url = f"/api/v1/incidents/{opened['incident_id']}/actions"
        async with http.post(url, json={"action": "acknowledge"}) as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == "unauthenticated"
        async with http.post(url, json={"action": "acknowledge"}, headers={"Authorization": "Bearer nope"}) as resp:
            assert resp.status == 401
        outsider = await token(env, f"go-{GRID}")  # another grid cell's officer
        async with http.post(url, json={"action": "acknowledge"}, headers={"Authorization": f"Bearer {outsider}"}) as r:
            assert r.status == 403 and (await r.json())["code"] == "forbidden"
        async with http.get(
            f"/api/v1/incidents/{opened['incident_id']}", headers={"Authorization": f"Bearer {outsider}"}
        ) as r:
            assert r.status == 403
        own = {"Authorization": f"Bearer {await token(env, 'go-990103002002002')}"}
        for bad in ({"action": "dance"}, {"action": "resolve", "outcome": "maybe"}, {"nothing": 1}, "[]"):
            async with http.post(url, data=orjson.dumps(bad) if not isinstance(bad, str) else bad, headers=own) as r:
                assert r.status == 422, bad
                assert (await r.json())["code"] == "invalid_body"
        async with http.post(url, json={"action": "resolve", "outcome": "referred"}, headers=own) as r:
            assert r.status == 409 and (await r.json())["code"] == "bad_referral"
        async with http.post(
            url, json={"action": "resolve", "outcome": "referred", "referral": "120"}, headers=own
        ) as r:
            assert r.status == 200 and (await r.json())["status"] == "referred"
        async with http.post(url, json={"action": "acknowledge"}, headers=own) as r:
            assert r.status == 409 and (await r.json())["code"] == "incident_closed"
        async with http.post(
            f"/api/v1/incidents/{uuid.uuid4()}/actions", json={"action": "note", "text": "x"}, headers=own
        ) as r:
            assert r.status == 404
        _, receipt = await device.wait_for(lambda r: r["status"] == "resolved", timeout=5)
        assert receipt["detail"] == "referred"
    finally:
        await device.close()


async def test_officer_app_acts_over_mqtt_once_per_action_id(env, pipeline) -> None:
    grid = "990104002002001"
    officer_id = f"go-{grid}"
    password = "officer-app-secret"
    async with env.pool.acquire() as conn:
        await conn.execute(
            "UPDATE officers SET mqtt_password_hash = $2 WHERE officer_id = $1", officer_id, hash_password(password)
        )
        await sync_broker_credentials(conn, env.settings)
    dev = await env.add_device(grid)
    device = await device_client(env.settings, dev.device_id, dev.password)
    app = None
    for _ in range(50):  # the broker reloads its password file asynchronously
        try:
            app = await device_client(env.settings, officer_id, password, receipts=False)
            break
        except Exception:  # noqa: BLE001
            await asyncio.sleep(0.1)
    assert app is not None
    try:
        await app.client.subscribe(f"pingan/v1/officers/{officer_id}/results", qos=1)
        await app.client.subscribe(topics.officer_notifications(officer_id), qos=1)
        opened = await open_incident(env, device, dev.device_id)
        await app.wait_for(
            lambda n: n.get("incident_id") == opened["incident_id"] and n.get("kind") == "incident_opened"
        )
        action = {"action_id": "a-1", "incident_id": opened["incident_id"], "action": "on_scene"}
        topic = f"pingan/v1/officers/{officer_id}/actions"
        await app.client.publish(topic, orjson.dumps(action), qos=1)
        _, result = await app.wait_for(lambda r: r.get("action_id") == "a-1")
        assert result["ok"] is True and result["status"] == "on_scene", result
        await device.wait_for(lambda r: r["status"] == "on_scene")
        # The same action again (as after a redelivery) takes effect once, with the same answer.
        await app.client.publish(topic, orjson.dumps(action), qos=1)
        await asyncio.sleep(0.5)
        results = [r for r in app.json() if r.get("action_id") == "a-1"]
        assert len(results) == 2 and results[0] == results[1]
        on_scene = await env.pool.fetchval(
            "SELECT count(*) FROM incident_timeline WHERE incident_id = $1::uuid AND kind = 'on_scene'",
            opened["incident_id"],
        )
        assert on_scene == 1
        # A refused action is answered with its code.
        await app.client.publish(topic, orjson.dumps({**action, "action_id": "a-2", "action": "on_scene"}), qos=1)
        _, refused = await app.wait_for(lambda r: r.get("action_id") == "a-2")
        assert refused["ok"] is False and refused["code"] == "already_on_scene"
        # An officer app cannot publish as another officer (the broker's ACL).
        from core.mqtt import MqttPublishError

        with pytest.raises(MqttPublishError):
            await app.client.publish(f"pingan/v1/officers/do-{grid[:12]}-1/actions", orjson.dumps(action), qos=1)
    finally:
        await device.close()
        await app.close()


async def test_response_time_statistics_per_unit(env, pipeline, http) -> None:
    grid = "990104001002002"
    dev = await env.add_device(grid)
    device = await device_client(env.settings, dev.device_id, dev.password)
    try:
        opened = await open_incident(env, device, dev.device_id)
        # The officer acts on the page: the "opened" receipt can reach the device before the
        # page is recorded as delivered, and an incident resolved before that would have taken
        # longer to notify than to resolve.
        await wait_notified(env, opened["incident_id"])
        own = {"Authorization": f"Bearer {await token(env, f'go-{grid}')}"}
        url = f"/api/v1/incidents/{opened['incident_id']}/actions"
        for body in ({"action": "acknowledge"}, {"action": "on_scene"}, {"action": "resolve", "outcome": "resolved"}):
            async with http.post(url, json=body, headers=own) as r:
                assert r.status == 200, await r.text()
        district = {"Authorization": f"Bearer {await token(env, 'do-990104-1')}"}
        async with http.get("/api/v1/stats/response-times", params={"unit": "990104"}, headers=district) as r:
            assert r.status == 200, await r.text()
            stats = await r.json()
        total = stats["total"]
        assert total["incidents"] >= 1 and total["resolved"] >= 1
        rt = total["response_times_s"]
        for k in ("to_notify", "to_acknowledge", "to_arrive", "to_resolve"):
            assert rt[k]["n"] >= 1 and rt[k]["p50"] is not None and rt[k]["p50"] >= 0
        assert rt["to_notify"]["p50"] <= rt["to_resolve"]["p50"]
        assert {c["unit"] for c in stats["children"]} <= {"990104001", "990104002"}
        assert stats["acknowledged_at_level"].get("grid", 0) >= 1
        # A grid officer cannot read the district's statistics.
        async with http.get("/api/v1/stats/response-times", params={"unit": "990104"}, headers=own) as r:
            assert r.status == 403
        async with http.get(
            "/api/v1/stats/response-times", params={"unit": "990104", "from": "yesterday"}, headers=district
        ) as r:
            assert r.status == 422
    finally:
        await device.close()


async def test_health_and_openapi(pipeline, http) -> None:
    for path in ("/healthz", "/readyz"):
        async with http.get(path) as r:
            assert r.status == 200
    async with http.get("/api/v1/openapi.json") as r:
        doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert "/api/v1/incidents/{incident_id}/actions" in doc["paths"]


async def test_timeline_pages_and_incidents_refer_to_rows_that_exist(env, pipeline) -> None:  # type: ignore[no-untyped-def]
    """The timeline and the pages have no foreign keys (migration 0014: they cost four lookups
    and row locks per alarm), nor the incidents' device and grid cell (migration 0019); what
    they refer to must exist all the same."""
    dev = await env.add_device(GRID, "pendant")
    device = await device_client(env.settings, dev.device_id, dev.password)
    try:
        opened = await open_incident(env, device, dev.device_id)
        await wait_notified(env, opened["incident_id"])
    finally:
        await device.close()
    mine = await env.pool.fetchrow(
        """SELECT (SELECT count(*) FROM incident_timeline WHERE incident_id = $1::uuid) AS timeline,
                  (SELECT count(*) FROM incident_timeline WHERE incident_id = $1::uuid
                      AND event_row_id IS NOT NULL) AS with_event,
                  (SELECT count(*) FROM notifications WHERE incident_id = $1::uuid) AS pages""",
        opened["incident_id"],
    )
    # This incident's own rows are among those checked: opened (with its event), paged, sent.
    assert mine["timeline"] >= 2 and mine["with_event"] >= 1 and mine["pages"] >= 1, dict(mine)
    orphans = await env.pool.fetchrow(
        """SELECT
             (SELECT count(*) FROM incident_timeline t
               WHERE NOT EXISTS (SELECT 1 FROM incidents i WHERE i.incident_id = t.incident_id)) AS timeline_incident,
             (SELECT count(*) FROM incident_timeline t
               WHERE t.event_row_id IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = t.event_row_id)) AS timeline_event,
             (SELECT count(*) FROM notifications n
               WHERE NOT EXISTS (SELECT 1 FROM incidents i WHERE i.incident_id = n.incident_id)) AS page_incident,
             (SELECT count(*) FROM notifications n
               WHERE NOT EXISTS (SELECT 1 FROM officers o WHERE o.officer_id = n.officer_id)) AS page_officer,
             (SELECT count(*) FROM incidents i
               WHERE i.device_id IS NOT NULL
                 AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.device_id = i.device_id)) AS incident_device,
             (SELECT count(*) FROM incidents i
               WHERE NOT EXISTS (SELECT 1 FROM units u WHERE u.code = i.grid_code)) AS incident_grid"""
    )
    assert dict(orphans) == {
        "timeline_incident": 0,
        "timeline_event": 0,
        "page_incident": 0,
        "page_officer": 0,
        "incident_device": 0,
        "incident_grid": 0,
    }

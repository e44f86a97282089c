"""Bad input on the real stack: garbage interleaved with good events over MQTT and HTTP, wrong
device clocks, repeated and reordered sequence numbers, replays, a flooding device, a
deactivated device, garbage from an officer app. Good input keeps flowing; every refusal has
its reason, on the device's receipt, the HTTP answer and in Postgres."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import aiohttp
import msgspec
import orjson
import pytest

from chaos import fuzz
from core.mosquitto_passwords import reload_broker
from core.mqtt import MqttError
from dispatch.credentials import sync_broker_credentials
from gateways.validation import Rejection, parse_event
from schemas import topics
from schemas.events import MAX_PAYLOAD_BYTES
from tests.support.mqtt_clients import device_client, event_payload
from tests.support.waiting import wait_until

pytestmark = pytest.mark.stack

# A grid cell per test: several devices of one cell alarming at once would form a major incident.
GRID = "990103002001001"
CLOCK_GRID = "990103002001002"
SEQ_GRID = "990103002001003"
FLOOD_GRID, CALM_GRID = "990103002002001", "990103002002002"
GONE_GRID = "990103002002003"
OTHER_GRID = "990103001001001"

RATE, BURST = 5.0, 10


@pytest.fixture(scope="module")
async def env(base_settings):  # type: ignore[no-untyped-def]
    """This module's environment: a low rate limit."""
    from tests.support.environment import TestEnvironment

    e = await TestEnvironment.create(
        base_settings.replace(device_rate_per_s=RATE, device_burst=BURST, alarm_min_interval_s=1.0)
    )
    try:
        yield e
    finally:
        await e.close()


@pytest.fixture(scope="module")
async def ingest(pipeline) -> Any:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{pipeline.ingest.port}") as s:
        yield s


async def connect(env: Any, dev: Any) -> Any:
    """A device's connection, once the broker has reloaded its accounts (it does so shortly
    after a device is added)."""
    for _ in range(50):
        try:
            return await device_client(env.settings, dev.device_id, dev.password)
        except MqttError:
            await asyncio.sleep(0.1)
    return await device_client(env.settings, dev.device_id, dev.password)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


NASTY_PAYLOADS: list[Any] = [
    b"",
    b"null",
    b"\xff\xfe\xfd",
    lambda d: orjson.dumps(event_payload(d, data={"note": "@"})).replace(b"@", b"\xff"),  # invalid UTF-8
    lambda d: orjson.dumps(event_payload(d, data={"note": "@"})).replace(b"@", b"\xed\xa0\x80"),  # surrogate
    lambda d: orjson.dumps(event_payload(d, data={"note": "@"})).replace(b"@", b"\\ud800"),
    lambda d: orjson.dumps(event_payload(d, data={"note": "nul\x00"})),
    lambda d: msgspec.json.encode(event_payload(d, data={"n": 2**70})),
    lambda d: orjson.dumps(event_payload(d, data={"n": 10**300 * 1.0})),
    lambda d: orjson.dumps(event_payload(d)).replace(b"}", b',"data":' + b"[" * 40 + b"]" * 40 + b"}"),
    lambda d: b'{"data":' + b"[" * 3000 + b"]" * 3000 + b"}",
    lambda d: orjson.dumps(event_payload(d, data={"pad": "x" * MAX_PAYLOAD_BYTES})),
    lambda d: msgspec.json.encode(event_payload(d, seq=2**64)),
    lambda d: orjson.dumps(event_payload(d, battery="full")),
    lambda d: orjson.dumps(event_payload(d, occurred_at="2026-02-30T00:00:00Z")),
    lambda d: orjson.dumps(event_payload(d, event_id="'; DROP TABLE events; --")),
    lambda d: orjson.dumps(event_payload(d, "alarm.<script>")),
]


def garbage(device_id: str, n: int, seed: int) -> list[tuple[bytes, str]]:
    """`n` inputs the validator refuses, each with the reason it gives: the nasty ones above,
    then mutations of valid events (as the fuzz run makes them)."""
    r = random.Random(seed)
    out: list[tuple[bytes, str]] = []
    candidates = [p(device_id) if callable(p) else p for p in NASTY_PAYLOADS]
    while len(out) < n:
        raw = candidates.pop(0) if candidates else fuzz.payload(r, lambda r: event_payload(device_id))[0]
        result = parse_event(raw, topic_device_id=device_id)
        if isinstance(result, Rejection):
            out.append((raw, result.reason.value))
    return out


async def rejected_reasons(env: Any, device_ids: list[str]) -> Counter[tuple[str, str]]:
    rows = await env.pool.fetch(
        "SELECT device_id, reason FROM rejected_inputs WHERE device_id = ANY($1::text[])", device_ids
    )
    return Counter((r["device_id"], r["reason"]) for r in rows)


async def test_garbage_interleaved_with_good_events_over_mqtt_and_http(env, pipeline, ingest) -> None:
    mqtt_devs = [await env.add_device(GRID) for _ in range(3)]
    http_devs = [await env.add_device(GRID) for _ in range(2)]
    clients = [await connect(env, d) for d in mqtt_devs]
    try:
        expected: Counter[tuple[str, str]] = Counter()
        good: list[tuple[str, str]] = []
        mqtt_bad = 0
        publishes = []
        for i, (dev, client) in enumerate(zip(mqtt_devs, clients, strict=True)):
            bad = garbage(dev.device_id, 60, seed=i)
            goods = [
                event_payload(dev.device_id, "device.heartbeat" if k % 2 else "alarm.panic", seq=k) for k in range(6)
            ]
            # Garbage and good events interleaved on one connection, in one stream.
            for k, (raw, reason) in enumerate(bad):
                if k % 10 == 0 and goods:
                    g = goods.pop()
                    good.append((dev.device_id, g["event_id"]))
                    publishes.append(client.client.publish(topics.device_events(dev.device_id), orjson.dumps(g)))
                publishes.append(client.client.publish(topics.device_events(dev.device_id), raw))
                expected[(dev.device_id, reason)] += 1
                mqtt_bad += 1
        await asyncio.gather(*publishes)  # every one PUBACKed by the broker

        for i, dev in enumerate(http_devs):
            auth = basic(dev.device_id, dev.password)
            url = f"/api/v1/devices/{dev.device_id}/events"
            for k, (raw, reason) in enumerate(garbage(dev.device_id, 30, seed=100 + i)):
                if k % 10 == 0:
                    g = event_payload(dev.device_id, "alarm.fall", seq=k)
                    async with ingest.post(url, data=orjson.dumps(g), headers=auth) as r:
                        assert r.status == 202, await r.text()
                    good.append((dev.device_id, g["event_id"]))
                async with ingest.post(url, data=raw, headers=auth) as r:
                    assert r.status == 422, (raw[:100], await r.text())
                    body = await r.json()
                assert body["status"] == "rejected" and body["reason"] == reason and body["detail"]
                expected[(dev.device_id, reason)] += 1

        all_ids = [d.device_id for d in mqtt_devs + http_devs]

        # Every good event is an event row (a heartbeat: a row of device_heartbeats); nothing else is.
        async def all_good_recorded() -> bool:
            rows = await env.pool.fetch(
                "SELECT device_id, event_id FROM events WHERE device_id = ANY($1::text[]) "
                "UNION ALL SELECT device_id, event_id FROM device_heartbeats WHERE device_id = ANY($1::text[])",
                all_ids,
            )
            return {(r["device_id"], r["event_id"]) for r in rows} == set(good)

        await wait_until(all_good_recorded, timeout=30)
        # Every bad one is on the record with the reason the validator gives.
        await wait_until(lambda: _eq(rejected_reasons(env, all_ids), expected), timeout=30)
        # Every device heard of each of its refusals, with the reason.
        for dev, client in zip(mqtt_devs, clients, strict=True):
            want = sum(n for (d, _), n in expected.items() if d == dev.device_id)
            await wait_until(
                lambda c=client, w=want: _const(sum(1 for r in c.json() if r["status"] == "rejected") == w),
                timeout=20,
            )
            assert all(r["reason"] and r["detail"] for r in client.json() if r["status"] == "rejected")
        assert await env.pool.fetchval("SELECT count(*) FROM unprocessable_events") == 0
        assert mqtt_bad == 180
    finally:
        for c in clients:
            await c.close()


async def _eq(coro: Any, want: Any) -> bool:
    return bool(await coro == want)


async def _const(v: Any) -> Any:
    return v


async def test_wrong_device_clock_is_accepted_flagged_and_timed_by_the_platform(env, pipeline) -> None:
    dev = await env.add_device(CLOCK_GRID)
    client = await connect(env, dev)
    try:
        for occurred, seq in (
            ("2001-01-01T00:00:00+08:00", 1),
            ((datetime.now(UTC) + timedelta(days=3)).isoformat(), 2),
        ):
            body = event_payload(dev.device_id, "alarm.panic", seq=seq, occurred_at=occurred)
            await client.client.publish(topics.device_events(dev.device_id), orjson.dumps(body))
            _, receipt = await client.wait_for(lambda r, e=body["event_id"]: r["event_id"] == e)
            assert receipt["status"] == "accepted" and "platform clock" in receipt["detail"]
        opened = await client.wait_for(lambda r: r["status"] in ("incident_opened", "incident_joined"))
        assert opened
        rows = await wait_until(
            lambda: _at_least(
                env.pool.fetch(
                    "SELECT occurred_at, received_at, clock_offset_s FROM events WHERE device_id = $1 ORDER BY seq",
                    dev.device_id,
                ),
                2,
            )
        )
        past, future = rows
        assert past["occurred_at"] == past["received_at"] and past["clock_offset_s"] < -25 * 365 * 86400
        assert future["occurred_at"] == future["received_at"] and 2.9 * 86400 < future["clock_offset_s"] < 3.1 * 86400
        inc = await env.pool.fetchrow(
            "SELECT pressed_at, received_at, due_at, status FROM incidents WHERE device_id = $1", dev.device_id
        )
        # The incident runs on the platform's clock: pressed when received, a deadline ahead.
        assert inc["pressed_at"] == inc["received_at"]
        assert inc["due_at"] > inc["received_at"]
    finally:
        await client.close()


async def _at_least(coro: Any, n: int) -> Any:
    rows = await coro
    return rows if len(rows) >= n else None


async def test_repeated_and_reordered_sequence_numbers_and_replays(env, pipeline) -> None:
    dev = await env.add_device(SEQ_GRID)
    client = await connect(env, dev)
    topic = topics.device_events(dev.device_id)
    try:
        newer = event_payload(dev.device_id, "device.heartbeat", seq=10, battery=80)
        older = event_payload(dev.device_id, "device.heartbeat", seq=5, battery=20)
        await client.client.publish(topic, orjson.dumps(newer))
        await client.client.publish(topic, orjson.dumps(older))  # arrives late: recorded, rolls nothing back
        # The newer one again, altered (same event id): a replay changes nothing.
        await client.client.publish(topic, orjson.dumps({**newer, "battery": 1, "seq": 99}))
        # Heartbeats get no "accepted" receipt: a last one, recorded after the replay in the
        # device's order, shows the replay was seen.
        marker = event_payload(dev.device_id, "device.heartbeat", seq=10, battery=80)
        await client.client.publish(topic, orjson.dumps(marker))
        await wait_until(
            lambda: _eq(
                env.pool.fetchval("SELECT count(*) FROM device_heartbeats WHERE device_id = $1", dev.device_id), 3
            )
        )
        await asyncio.sleep(0.5)
        d = await env.pool.fetchrow("SELECT last_seq, battery FROM devices WHERE device_id = $1", dev.device_id)
        assert d["last_seq"] == 10 and d["battery"] == 80
        rows = await env.pool.fetch(
            "SELECT event_id, seq, battery FROM device_heartbeats WHERE device_id = $1", dev.device_id
        )
        assert {(r["event_id"], r["seq"], r["battery"]) for r in rows} == {
            (newer["event_id"], 10, 80),
            (older["event_id"], 5, 20),
            (marker["event_id"], 10, 80),
        }

        # A press, resolved; then the same press replayed: no new incident, nothing reopened.
        press = event_payload(dev.device_id, "alarm.panic", seq=11)
        await client.client.publish(topic, orjson.dumps(press))
        _, opened = await client.wait_for(lambda r: r["status"] == "incident_opened")
        async with env.pool.acquire() as conn:
            await conn.execute(
                "UPDATE incidents SET status = 'resolved', closed_at = now() WHERE incident_id = $1::uuid",
                opened["incident_id"],
            )
        for _ in range(2):
            await client.client.publish(topic, orjson.dumps(press))
        await asyncio.sleep(1.5)
        assert await env.pool.fetchval("SELECT count(*) FROM incidents WHERE device_id = $1", dev.device_id) == 1
        assert (
            await env.pool.fetchval(
                "SELECT count(*) FROM events WHERE device_id = $1 AND event_id = $2", dev.device_id, press["event_id"]
            )
            == 1
        )
        assert await env.pool.fetchval(
            "SELECT closed_at IS NOT NULL FROM incidents WHERE incident_id = $1::uuid", opened["incident_id"]
        )
    finally:
        await client.close()


async def test_a_flooding_device_is_rate_limited_without_starving_others(env, pipeline) -> None:
    flood = await env.add_device(FLOOD_GRID)
    calm = await env.add_device(CALM_GRID)
    f = await connect(env, flood)
    c = await connect(env, calm)
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        heartbeats = [event_payload(flood.device_id, "device.heartbeat", seq=k) for k in range(300)]
        pubs = [f.client.publish(topics.device_events(flood.device_id), orjson.dumps(h)) for h in heartbeats[:150]]
        # In the middle of the flood: the flooding device's own alarm, and another device's.
        alarm = event_payload(flood.device_id, "alarm.fire", seq=1000)
        pubs.append(f.client.publish(topics.device_events(flood.device_id), orjson.dumps(alarm)))
        other = event_payload(calm.device_id, "alarm.panic", seq=1)
        await c.client.publish(topics.device_events(calm.device_id), orjson.dumps(other))
        pubs += [f.client.publish(topics.device_events(flood.device_id), orjson.dumps(h)) for h in heartbeats[150:]]
        _, calm_opened = await c.wait_for(lambda r: r["status"] == "incident_opened", timeout=10)
        calm_latency = loop.time() - t0
        await asyncio.gather(*pubs)

        # The flooding device's alarm got through and opened its incident.
        await f.wait_for(lambda r: r["status"] == "incident_opened" and r["event_id"] == alarm["event_id"], timeout=10)

        # Its excess heartbeats were refused, each with a receipt and on the record; the others
        # were recorded (a heartbeat gets no "accepted" receipt).
        async def recorded_heartbeats() -> int:
            return int(
                await env.pool.fetchval("SELECT count(*) FROM device_heartbeats WHERE device_id = $1", flood.device_id)
            )

        async def all_taken_in() -> bool:
            return await recorded_heartbeats() + sum(1 for x in f.json() if x["status"] == "rejected") == 300

        await wait_until(all_taken_in, timeout=20)
        elapsed = loop.time() - t0  # the gateway took them in within this time
        limited = [r for r in f.json() if r.get("reason") == "rate_limited"]
        accepted_hb = await recorded_heartbeats()
        assert accepted_hb <= BURST + RATE * elapsed + 2, (accepted_hb, elapsed)
        assert len(limited) == 300 - accepted_hb and all(r["detail"] for r in limited)
        await wait_until(
            lambda: _eq(
                env.pool.fetchval(
                    "SELECT count(*) FROM rejected_inputs WHERE device_id = $1 AND reason = 'rate_limited'",
                    flood.device_id,
                ),
                len(limited),
            ),
            timeout=20,
        )
        # The other device was not held up behind the flood.
        assert calm_opened["event_id"] == other["event_id"] and calm_latency < 5
    finally:
        await f.close()
        await c.close()


async def test_a_deactivated_device_is_refused_with_its_reason(env, pipeline, ingest) -> None:
    dev = await env.add_device(GONE_GRID)
    client = await connect(env, dev)
    auth = basic(dev.device_id, dev.password)
    url = f"/api/v1/devices/{dev.device_id}/events"
    try:
        # Active: accepted over both ways in (and now in the gateways' caches, for minutes).
        first = event_payload(dev.device_id, "device.heartbeat", seq=1)
        await client.client.publish(topics.device_events(dev.device_id), orjson.dumps(first))
        await wait_until(
            lambda: env.pool.fetchval("SELECT 1 FROM device_heartbeats WHERE event_id = $1", first["event_id"])
        )
        async with ingest.post(
            url, data=orjson.dumps(event_payload(dev.device_id, "device.heartbeat")), headers=auth
        ) as r:
            assert r.status == 202
        async with env.pool.acquire() as conn:
            await conn.execute("UPDATE devices SET active = false WHERE device_id = $1", dev.device_id)
        await asyncio.sleep(0.5)  # Postgres tells the gateways (NOTIFY); far less than their cache
        body = event_payload(dev.device_id)
        # The connection opened before the deactivation: the gateway refuses with the reason.
        await client.client.publish(topics.device_events(dev.device_id), orjson.dumps(body))
        _, rej = await client.wait_for(lambda r: r.get("event_id") == body["event_id"])
        assert rej["status"] == "rejected" and rej["reason"] == "inactive_device"
        # Over HTTP its credentials no longer count.
        async with ingest.post(url, data=orjson.dumps(body), headers=auth) as r:
            assert r.status == 401 and (await r.json())["code"] == "unauthenticated"
        # And once the broker's accounts are written again, it cannot connect at all.
        async with env.pool.acquire() as conn:
            await sync_broker_credentials(conn, env.settings)
        refused = False
        for attempt in range(50):  # the broker reloads its password file asynchronously
            try:
                again = await device_client(env.settings, dev.device_id, dev.password, receipts=False)
            except MqttError:
                refused = True
                break
            await again.close()
            if attempt % 10 == 9:  # Mosquitto 2.0.11 can lose a reload signal (dispatch.credentials)
                reload_broker(env.settings.mqtt_pid_file)
            await asyncio.sleep(0.1)
        assert refused
        assert (
            await env.pool.fetchval("SELECT count(*) FROM device_heartbeats WHERE device_id = $1", dev.device_id) == 2
        )
        assert (
            await env.pool.fetchval(
                "SELECT count(*) FROM rejected_inputs WHERE device_id = $1 AND reason = 'inactive_device'",
                dev.device_id,
            )
            >= 1
        )
    finally:
        await client.close()


async def test_garbage_from_an_officer_app_is_answered_and_the_next_action_works(env, pipeline) -> None:
    from core.mosquitto_passwords import hash_password

    officer_id = f"go-{OTHER_GRID}"
    password = "officer-app-secret-2"
    async with env.pool.acquire() as conn:
        await conn.execute(
            "UPDATE officers SET mqtt_password_hash = $2 WHERE officer_id = $1", officer_id, hash_password(password)
        )
        await sync_broker_credentials(conn, env.settings)
    await env.broker_knows(officer_id, password)
    app = await device_client(env.settings, officer_id, password, receipts=False)
    dev = await env.add_device(OTHER_GRID)
    device = await connect(env, dev)
    try:
        await app.client.subscribe(f"pingan/v1/officers/{officer_id}/results", qos=1)
        await device.client.publish(
            topics.device_events(dev.device_id), orjson.dumps(event_payload(dev.device_id, seq=1))
        )
        _, opened = await device.wait_for(lambda r: r["status"] in ("incident_opened", "incident_joined"))
        topic = f"pingan/v1/officers/{officer_id}/actions"
        base = {"incident_id": opened["incident_id"], "action": "note"}
        for raw in (
            b"\xff\xfe",
            orjson.dumps({**base, "action_id": "g-1", "text": "@"}).replace(b"@", b"\xff"),
            orjson.dumps({**base, "action_id": "g-2", "text": "nul \x00 inside"}),
            b"[" * 5000,
            orjson.dumps({**base, "action_id": "g-3", "action": "explode"}),
        ):
            await app.client.publish(topic, raw)
        await app.wait_for(lambda r: sum(1 for x in app.json() if x.get("ok") is False) == 5, timeout=10)
        assert all(x["code"] == "invalid_body" and x["message"] for x in app.json())
        await app.client.publish(topic, orjson.dumps({**base, "action_id": "ok-1", "text": "<b>到了</b>"}))
        _, ok = await app.wait_for(lambda r: r.get("action_id") == "ok-1")
        assert ok["ok"] is True
    finally:
        await app.close()
        await device.close()


# -- the desk API and its WebSocket, fed garbage ----------------------------------------------


@pytest.fixture(scope="module")
async def desk(pipeline) -> Any:  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{pipeline.api.port}") as s:
        yield s


async def city_admin(env: Any) -> dict[str, str]:
    from core.sessions import issue
    from core.timeutil import utcnow

    async with env.pool.acquire() as conn:
        token = await issue(conn, "admin-990100", ttl=timedelta(hours=1), now=utcnow())
    return {"Authorization": f"Bearer {token}"}


QUERY_NAMES = ["unit", "limit", "offset", "state", "from", "to", "since", "format"]


async def test_garbage_to_every_api_route_is_refused_with_a_reason_never_a_500(env, pipeline, desk) -> None:
    """Every route of the desk API, as the city's administrator (so the garbage reaches the
    handlers, their queries and Postgres): fuzzed path parameters, query strings and bodies."""
    from core.settings import Settings
    from dispatch.api.app import build_app

    auth = await city_admin(env)
    app = build_app(Settings(), None)  # type: ignore[arg-type]  # its router only
    routes = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        if route.method in ("HEAD", "OPTIONS") or ("formatter" not in info and "path" not in info):
            continue  # the static files
        template = info.get("formatter") or info["path"]
        if template == "/api/v1/auth/sign-out":
            continue  # it would end this very session
        routes.append((route.method, template))
    r = random.Random(7)
    statuses: Counter[int] = Counter()
    for method, template in routes:
        for _ in range(40):
            path = template
            for name in ("incident_id", "officer_id"):
                path = path.replace("{" + name + "}", _url_text(r, str(uuid4()) if name == "incident_id" else "go-x"))
            query = {
                name: fuzz.text(r, r.choice(["990102", "10", "open", "2026-11-26T00:00:00+08:00", "csv"]))
                for name in r.sample(QUERY_NAMES, r.randrange(0, 4))
            }
            body, _ = fuzz.payload(r, lambda r: {"action": "note", "text": "x", "officer_id": "go-q", "name": "n"})
            async with desk.request(
                method,
                path,
                params=query,
                data=body,
                headers={**auth, "Content-Type": "application/json"},
                allow_redirects=False,
            ) as resp:
                statuses[resp.status] += 1
                text = await resp.text()
                assert resp.status < 500, (method, path, query, body[:200], resp.status, text[:300])
                if resp.status >= 400 and resp.content_type == "application/json":
                    answer = orjson.loads(text)
                    assert answer["code"] and answer["message"], answer
    assert statuses[422] + statuses[404] + statuses[400] > 0, statuses
    # The API is still well after all of it.
    async with desk.get("/api/v1/me", headers=auth) as resp:
        assert resp.status == 200


def _url_text(r: random.Random, valid: str) -> str:
    from urllib.parse import quote

    return quote(fuzz.text(r, valid), safe="")


async def test_garbage_over_the_websocket_is_ignored_and_updates_keep_coming(env, pipeline, desk) -> None:
    auth = await city_admin(env)
    ws = await desk.ws_connect("/api/v1/ws", headers=auth)
    try:
        assert orjson.loads((await ws.receive()).data)["type"] == "hello"
        r = random.Random(11)
        for _ in range(200):
            raw, _ = fuzz.payload(r, lambda r: {"type": "subscribe", "unit": "990102"})
            if r.random() < 0.5:
                await ws.send_bytes(raw)
            else:
                await ws.send_str(raw.decode("utf-8", "replace"))
        # Updates still arrive on the same socket.
        dev = await env.add_device(OTHER_GRID)
        client = await connect(env, dev)
        try:
            await client.client.publish(topics.device_events(dev.device_id), orjson.dumps(event_payload(dev.device_id)))
            _, opened = await client.wait_for(lambda m: m["status"] in ("incident_opened", "incident_joined"))
        finally:
            await client.close()
        while True:
            msg = await asyncio.wait_for(ws.receive(), 10)
            body = orjson.loads(msg.data)
            if body["type"] == "incident" and body["incident"]["incident_id"] == opened["incident_id"]:
                break
        # A message beyond the limit closes that socket only; a new one works.
        await ws.send_bytes(b"x" * (64 * 1024 + 1))
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    finally:
        await ws.close()
    again = await desk.ws_connect("/api/v1/ws", headers=auth)
    assert orjson.loads((await again.receive()).data)["type"] == "hello"
    await again.close()

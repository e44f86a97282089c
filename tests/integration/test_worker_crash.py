"""The escalation worker is killed (SIGKILL) mid-stream and restarted: every press that the
broker acknowledged is in Postgres exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from schemas import topics
from tests.support.mqtt_clients import device_client, event_payload
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]


def start_worker(env, log_path: Path) -> subprocess.Popen[bytes]:  # type: ignore[no-untyped-def]
    child_env = dict(os.environ)
    child_env.update(env.settings.to_env())
    child_env["PINGAN_LOG_LEVEL"] = "info"
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "dispatch.cli", "worker"],
            cwd=REPO,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def count_events(env) -> int:  # type: ignore[no-untyped-def]
    return int(await env.pool.fetchval("SELECT count(*) FROM events"))


async def test_worker_killed_mid_stream_loses_nothing_and_duplicates_nothing(env, tmp_path) -> None:
    pipeline = Pipeline(env.settings, env.pool, names=("gateway", "notifier", "relay"))
    await pipeline.start()
    log_path = tmp_path / "worker.log"
    worker = start_worker(env, log_path)
    devices = []
    try:
        for i in range(12):
            grid = ["990102001001001", "990103002001002", "990104001002003"][i % 3]
            d = await env.add_device(grid, "panic_button")
            devices.append((d, await device_client(env.settings, d.device_id, d.password, receipts=False)))

        total, rate = 600, 150.0
        acked: list[str] = []
        failed = 0
        killed_at = restarted_at = None
        pending: list[asyncio.Future[None]] = []
        ids: list[str] = []
        t0 = time.monotonic()
        for n in range(total):
            dev, client = devices[n % len(devices)]
            body = event_payload(dev.device_id, seq=n // len(devices) + 1)
            ids.append(body["event_id"])
            pending.append(client.client.publish_nowait(topics.device_events(dev.device_id), orjson.dumps(body), qos=1))
            if n == total // 3:
                # Make sure the worker is mid-stream: it has recorded some, not all.
                deadline = time.monotonic() + 30
                while await count_events(env) == 0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                assert await count_events(env) > 0, log_path.read_text()
                os.kill(worker.pid, signal.SIGKILL)
                worker.wait()
                killed_at = await count_events(env)
            if n == total // 2:
                worker = start_worker(env, log_path)
                restarted_at = n
            await asyncio.sleep(max(0.0, t0 + (n + 1) / rate - time.monotonic()))
        results = await asyncio.gather(*pending, return_exceptions=True)
        errors = []
        for event_id, res in zip(ids, results, strict=True):
            if isinstance(res, BaseException):
                failed += 1
                errors.append(repr(res))
            else:
                acked.append(event_id)
        assert failed == 0, errors[:5]
        assert killed_at is not None and 0 < killed_at < total
        assert restarted_at is not None

        deadline = time.monotonic() + 90
        while await count_events(env) < len(acked) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # a duplicate would show up now

        rows = await env.pool.fetch("SELECT event_id FROM events")
        recorded = [r["event_id"] for r in rows]
        assert len(recorded) == len(set(recorded)), "an event was recorded twice"
        missing = set(acked) - set(recorded)
        assert not missing, f"{len(missing)} acknowledged presses lost; worker log:\n{log_path.read_text()[-3000:]}"
        assert len(recorded) == total

        # Every incident got its notification queued, none without (a member of a major
        # incident is paged through the major incident).
        orphans = await env.pool.fetchval(
            "SELECT count(*) FROM incidents i WHERE NOT EXISTS "
            "(SELECT 1 FROM notifications n WHERE n.incident_id = COALESCE(i.major_id, i.incident_id))"
        )
        assert orphans == 0
        joined = await env.pool.fetchval("SELECT sum(event_count) FROM incidents WHERE NOT is_major")
        assert joined == total  # every press opened or joined exactly one device incident
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for _, c in devices:
            await c.close()
        await pipeline.stop()

"""The duty desk in a real browser (headless Chromium) against the whole pipeline: devices
press over MQTT, incidents open, and signed-in desks show and act on them live."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.desk import CuttableProxy, Desk, open_desk, wait_connected

pytestmark = pytest.mark.stack

# Demo city cells (dispatch/demo_city.py): community 990102001001 has grids 001..003.
COMMUNITY = "990102001001"
GRID = f"{COMMUNITY}001"
NEIGHBOUR = f"{COMMUNITY}002"  # same community, another grid officer
GRID_B = "990103002001001"  # another district: test 2 and 6
COMMUNITY_B = GRID_B[:12]
GRID_C = "990104001002003"  # test 4
HOSTILE_NOTE = '<img src=x onerror="window.__xss=1">独居老人，听力差'

TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _record_timings() -> Any:
    yield
    out = Path(__file__).resolve().parents[2] / "artifacts" / "browser-timings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(TIMINGS, indent=2))


def no_page_errors(*desks: Desk) -> None:
    for d in desks:
        assert not d.errors, f"{d.officer_id}: {d.errors}"


async def test_press_appears_in_the_queues_within_two_seconds(browser, base_url, devices, screenshots) -> None:
    # The grid officer signs in through the page itself; the community desk over the API.
    grid = await open_desk(browser, base_url, f"go-{GRID}", sign_in=False)
    community = await open_desk(browser, base_url, f"do-{COMMUNITY}-1")
    try:
        page = grid.page
        await page.goto("/queue")
        await expect(page).to_have_url(f"{base_url}/login?next=%2Fqueue")
        await page.get_by_test_id("login-password").fill("wrong")
        await page.get_by_test_id("login-officer").fill(f"go-{GRID}")
        await page.get_by_test_id("login-submit").click()
        await expect(page.get_by_test_id("login-error")).to_be_visible()
        await page.screenshot(path=str(screenshots / "login.png"))
        await page.get_by_test_id("login-password").fill("pingan-demo")
        await page.get_by_test_id("login-submit").click()
        await expect(page).to_have_url(f"{base_url}/queue")
        await wait_connected(grid)
        await wait_connected(community)

        device = await devices(GRID, kind="fall_detector", address="幸福里 3号楼2单元501", note=HOSTILE_NOTE)
        t0 = time.monotonic()
        await device.publish("alarm.fall")
        _, opened = await device.collector.wait_for(lambda r: r["status"] == "incident_opened", timeout=5)
        t_opened = time.monotonic() - t0
        incident_id = opened["incident_id"]
        for desk in (grid, community):
            await expect(desk.row(incident_id)).to_be_visible(timeout=max(100, 2000 - (time.monotonic() - t0) * 1000))
        TIMINGS["press_to_incident_opened_receipt_s"] = round(t_opened, 3)
        TIMINGS["press_to_row_in_both_queues_s"] = round(time.monotonic() - t0, 3)
        assert time.monotonic() - t0 < 2.0

        # The row says what happened where, untouched by markup in the resident's note.
        row = grid.row(incident_id)
        await expect(row).to_have_class("row prio-1 st-notified new")
        await expect(row.get_by_test_id("incident-link")).to_have_text("跌倒 · 跌倒探测器")
        await expect(row.get_by_test_id("where")).to_contain_text("幸福里 3号楼2单元501")
        await expect(row.get_by_test_id("where")).to_contain_text("春晖社区第1网格")
        await expect(row.get_by_test_id("resident-note")).to_have_text(HOSTILE_NOTE)
        await expect(row.get_by_test_id("level")).to_have_text("网格级")
        await expect(row.get_by_test_id("countdown")).to_contain_text("确认剩余")
        await expect(row.get_by_test_id("case-number")).to_have_text(opened["case_number"])
        assert await grid.page.evaluate("window.__xss") is None
        assert await row.locator("img").count() == 0
        no_page_errors(grid, community)
    finally:
        await grid.close()
        await community.close()


async def test_acknowledge_in_one_desk_shows_in_the_other_and_tells_the_device(
    browser, base_url, devices, screenshots
) -> None:
    grid = await open_desk(browser, base_url, f"go-{GRID_B}")
    community = await open_desk(browser, base_url, f"do-{COMMUNITY_B}-1")
    try:
        await wait_connected(grid)
        await wait_connected(community)
        device = await devices(GRID_B, kind="panic_button", note="行动不便")
        opened = await device.press()
        incident_id = opened["incident_id"]
        other_row = community.row(incident_id)
        await expect(other_row.get_by_test_id("status")).to_have_text("已通知", timeout=3000)

        t0 = time.monotonic()
        await grid.row(incident_id).get_by_test_id("action-acknowledge").click()
        await expect(other_row).to_have_attribute("data-status", "acknowledged", timeout=3000)
        TIMINGS["click_to_other_desk_status_s"] = round(time.monotonic() - t0, 3)
        await expect(other_row.get_by_test_id("status")).to_have_text("已确认")
        await expect(other_row.get_by_test_id("countdown")).to_contain_text("到场剩余")
        await expect(other_row).to_contain_text(f"go-{GRID_B}")
        # The acknowledging desk's own row changed too, and offers the next step.
        await expect(grid.row(incident_id).get_by_test_id("status")).to_have_text("已确认")
        await expect(grid.row(incident_id).get_by_test_id("action-acknowledge")).to_have_count(0)
        _, receipt = await device.collector.wait_for(lambda r: r["status"] == "acknowledged", timeout=5)
        assert receipt["incident_id"] == incident_id

        # An action the state refuses shows the server's message instead of failing quietly.
        await grid.row(incident_id).get_by_test_id("action-on_scene").click()
        await expect(other_row).to_have_attribute("data-status", "on_scene", timeout=3000)
        r = await grid.context.request.post(f"/api/v1/incidents/{incident_id}/actions", data={"action": "on_scene"})
        assert r.status == 409
        no_page_errors(grid, community)
    finally:
        await grid.close()
        await community.close()


async def test_a_grid_officer_of_another_cell_never_sees_it(browser, base_url, devices) -> None:
    neighbour = await open_desk(browser, base_url, f"go-{NEIGHBOUR}")
    community = await open_desk(browser, base_url, f"do-{COMMUNITY}-2")
    try:
        await wait_connected(neighbour)
        await wait_connected(community)
        theirs = await (await devices(GRID)).press("alarm.medical")
        await expect(community.row(theirs["incident_id"])).to_be_visible(timeout=3000)
        # The neighbour's feed is live: its own incident, opened after, does arrive ...
        own = await (await devices(NEIGHBOUR)).press("alarm.gas")
        await expect(neighbour.row(own["incident_id"])).to_be_visible(timeout=3000)
        # ... and the other cell's, sent earlier if it were sent at all, is not there.
        await expect(neighbour.row(theirs["incident_id"])).to_have_count(0)
        for row in await neighbour.page.get_by_test_id("incident-row").all():
            assert await row.get_attribute("data-incident-id") != theirs["incident_id"]
        # A reload (the list from the API) does not show it either, nor does its page.
        await neighbour.page.reload()
        await expect(neighbour.row(own["incident_id"])).to_be_visible()
        await expect(neighbour.row(theirs["incident_id"])).to_have_count(0)
        await neighbour.page.goto(f"/incidents/{theirs['incident_id']}")
        await expect(neighbour.page.get_by_test_id("page-error")).to_contain_text("outside the jurisdiction")
        await expect(neighbour.page.get_by_test_id("timeline")).to_have_count(0)
        no_page_errors(neighbour, community)
    finally:
        await neighbour.close()
        await community.close()


async def test_the_queue_reconnects_and_catches_up_after_a_network_drop(browser, devices, proxy: CuttableProxy) -> None:
    desk = await open_desk(browser, f"http://127.0.0.1:{proxy.port}", f"go-{GRID_C}")
    sockets: list[str] = []
    desk.page.on("websocket", lambda ws: sockets.append(ws.url))
    try:
        await wait_connected(desk)
        await desk.page.evaluate("window.__sameDocument = true")
        before = await (await devices(GRID_C)).press("alarm.fire")
        await expect(desk.row(before["incident_id"])).to_be_visible(timeout=3000)

        connects = await desk.page.evaluate("window.pingan.live.connects")
        t_cut = time.monotonic()
        proxy.cut()
        await expect(desk.page.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting")
        await expect(desk.page.get_by_test_id("connection")).to_have_text("重新连接中…")
        during = await (await devices(GRID_C)).press("alarm.panic")
        await asyncio.sleep(0.3)
        await expect(desk.row(during["incident_id"])).to_have_count(0)

        # It keeps trying, with backoff (0.5 s, then 1 s, 2 s ... up to 5 s), not in a tight loop.
        while await desk.page.evaluate("window.pingan.live.connects") < connects + 2:
            assert time.monotonic() - t_cut < 5, "no second reconnect attempt within 5 s"
            await asyncio.sleep(0.05)
        assert time.monotonic() - t_cut > 1.2
        await expect(desk.row(during["incident_id"])).to_have_count(0)
        t0 = time.monotonic()
        proxy.restore()
        await wait_connected(desk, timeout_ms=8000)
        await expect(desk.row(during["incident_id"])).to_be_visible(timeout=3000)
        TIMINGS["restore_to_caught_up_s"] = round(time.monotonic() - t0, 3)
        await expect(desk.row(before["incident_id"])).to_be_visible()
        # Caught up in place (no reload), from the newest row it had, with the time URL-encoded.
        assert await desk.page.evaluate("window.__sameDocument") is True
        assert len(sockets) >= 2
        assert "since=" in sockets[-1] and "%3A" in sockets[-1] and "%2B" in sockets[-1], sockets[-1]
        no_page_errors(desk)
    finally:
        await desk.close()


async def test_the_language_switch(browser, base_url, screenshots) -> None:
    desk = await open_desk(browser, base_url, "do-990100-1", locale="en-US")
    try:
        page = desk.page
        await wait_connected(desk)
        # Follows the browser's language at first.
        await expect(page.locator("html")).to_have_attribute("lang", "en")
        await expect(page.get_by_test_id("nav-queue")).to_have_text("Alert queue")
        await expect(page.get_by_test_id("connection")).to_have_text("Live")
        await expect(page.get_by_test_id("incident-row").first).to_be_visible()
        statuses = set(await page.get_by_test_id("status").all_text_contents())
        assert statuses and statuses <= {"Opened", "Notified", "Acknowledged", "On scene"}, statuses

        await page.get_by_test_id("lang-switch").click()
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        await expect(page.get_by_test_id("nav-queue")).to_have_text("告警队列")
        await expect(page.get_by_test_id("lang-switch")).to_have_text("English")
        await expect(page.get_by_test_id("connection")).to_have_text("实时已连接")
        statuses = set(await page.get_by_test_id("status").all_text_contents())
        assert statuses and statuses <= {"已立案", "已通知", "已确认", "已到场"}, statuses
        # Remembered: a reload keeps Chinese although the browser says English.
        await page.reload()
        await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        await expect(page.get_by_test_id("nav-stats")).to_have_text("统计")
        await page.get_by_test_id("lang-switch").click()
        await expect(page.get_by_test_id("nav-stats")).to_have_text("Statistics")
        assert await page.evaluate("localStorage.getItem('pingan.lang')") == "en"
        await page.screenshot(path=str(screenshots / "queue-en.png"))
        # Signing out ends the session: the pages go back to the sign-in page.
        await page.get_by_test_id("sign-out").click()
        await expect(page).to_have_url(f"{desk.base_url}/login")
        assert (await desk.context.request.get("/api/v1/me")).status == 401
        await page.goto("/stats")
        await expect(page).to_have_url(f"{desk.base_url}/login?next=%2Fstats")
        no_page_errors(desk)
    finally:
        await desk.close()


async def test_incident_statistics_and_devices_pages(browser, base_url, devices, screenshots) -> None:
    # A few more alarms of several priorities, so the city's queue and statistics have content.
    presses = [
        ("990102002001002", "smoke_detector", "alarm.fire", "和平小区 5号楼1单元302", "独居老人"),
        ("990103001002001", "door_sensor", "alarm.intrusion", "西城翠竹苑 2号楼", ""),
        ("990104002001003", "gas_detector", "device.tamper", "南湖花园 9号楼地下室", ""),
        ("990102001002002", "pendant", "device.low_battery", "春晖里 7号楼3单元1101", "有心脏病史"),
    ]
    for grid, kind, type_, address, note in presses:
        await (await devices(grid, kind=kind, address=address, note=note)).press(type_)
    device = await devices(GRID_B, kind="gas_detector", address="翠竹苑 8号楼1单元202", note="行动不便")
    opened = await device.press("alarm.gas")
    incident_id = opened["incident_id"]

    city = await open_desk(browser, base_url, "do-990100-1")
    try:
        page = city.page
        await wait_connected(city)
        await expect(city.row(incident_id)).to_be_visible(timeout=3000)
        # Seen from the city, a row says in which district and street the cell is.
        await expect(city.row(incident_id).get_by_test_id("where")).to_contain_text(
            "西城区 · 和平街道 · 春晖社区第1网格"
        )
        # Ordered by priority, then age.
        priorities = [
            int(p)
            for p in await page.eval_on_selector_all(
                "[data-testid=incident-row]", "rows => rows.map(r => r.dataset.priority)"
            )
        ]
        assert priorities == sorted(priorities) and {1, 2, 3, 4} <= set(priorities), priorities
        await page.screenshot(path=str(screenshots / "queue.png"), full_page=True)

        # Act from the queue: take over (a centre), then a note through the dialog.
        await city.row(incident_id).get_by_test_id("action-take_over").click()
        await expect(city.row(incident_id)).to_have_attribute("data-status", "acknowledged", timeout=3000)
        await expect(city.row(incident_id).get_by_test_id("level")).to_have_text("市级")
        await city.row(incident_id).get_by_test_id("action-note").click()
        await page.get_by_test_id("dialog-text").fill("<b>已联系家属</b>")
        await page.get_by_test_id("dialog-submit").click()
        await expect(page.get_by_test_id("toast").last).to_contain_text("备注")

        # The incident page: what, where, the clocks, and the whole timeline.
        await city.row(incident_id).get_by_test_id("incident-link").click()
        await expect(page).to_have_url(f"{base_url}/incidents/{incident_id}")
        await expect(page.get_by_test_id("incident-what")).to_have_text("燃气泄漏 · 燃气探测器")
        timeline = page.get_by_test_id("timeline-entry")
        for kind in ("opened", "notifications_queued", "taken_over", "note"):
            await expect(timeline.and_(page.locator(f'[data-kind="{kind}"]'))).not_to_have_count(0)
        await expect(timeline.and_(page.locator('[data-kind="note"]'))).to_contain_text("<b>已联系家属</b>")
        await expect(page.get_by_test_id("notifications-table").locator("tbody tr")).not_to_have_count(0)
        await expect(page.get_by_test_id("notifications-table")).to_contain_text("已送达")
        await expect(page.get_by_test_id("history-table").locator("tbody tr")).to_have_count(1)
        await expect(page.get_by_test_id("policy-table").locator("tbody tr")).to_have_count(5)
        await expect(page.get_by_test_id("facts")).to_contain_text("翠竹苑 8号楼1单元202")
        # Assign to the grid officer through the dialog.
        await page.get_by_test_id("action-assign").click()
        await page.get_by_test_id("dialog-assignee").select_option(f"go-{GRID_B}")
        await page.get_by_test_id("dialog-submit").click()
        await expect(page.get_by_test_id("facts")).to_contain_text(f"(go-{GRID_B})", timeout=3000)
        await expect(timeline.and_(page.locator('[data-kind="assigned"]'))).to_have_count(1)
        # Live on this page too: report on scene from here, the status follows.
        await page.get_by_test_id("action-on_scene").click()
        await expect(page.get_by_test_id("status")).to_have_text("已到场", timeout=3000)
        await expect(timeline.and_(page.locator('[data-kind="on_scene"]'))).to_have_count(1)
        await page.screenshot(path=str(screenshots / "incident.png"), full_page=True)
        # Resolve with a referral through the dialog; the page shows the closed incident.
        await page.get_by_test_id("action-resolve").click()
        await page.get_by_test_id("dialog-outcome").select_option("referred")
        await page.get_by_test_id("dialog-referral").select_option("119")
        await page.get_by_test_id("dialog-submit").click()
        await expect(page.get_by_test_id("status")).to_have_text("已移交", timeout=3000)
        await expect(page.get_by_test_id("facts")).to_contain_text("119 消防")
        await expect(page.get_by_test_id("actions").locator("button")).to_have_count(0)
        _, receipt = await device.collector.wait_for(lambda r: r["status"] == "resolved", timeout=5)
        assert receipt["incident_id"] == incident_id and receipt.get("detail") == "referred"

        # Statistics of the city: per district, a chart drawn in SVG, and the CSV.
        await page.get_by_test_id("nav-stats").click()
        await expect(page).to_have_url(re.compile(r"/stats\?unit=990100&from=\d{4}-\d\d-\d\d&to="))
        chart = page.get_by_test_id("chart-times")
        await expect(chart).to_be_visible()
        await expect(page.get_by_test_id("chart-counts").get_by_test_id("chart-bar")).not_to_have_count(0)
        # One bar group per district with alarms (the maintenance incidents are not counted).
        await expect(chart.locator("text.row-label")).not_to_have_count(0)
        districts = set(await chart.locator("text.row-label").all_text_contents())
        assert {"东城区", "西城区"} <= districts <= {"东城区", "西城区", "南湖区"}, districts
        await expect(page.get_by_test_id("stats-table").locator("tbody tr")).to_have_count(4)
        await expect(page.get_by_test_id("tile-incidents")).not_to_have_text("0")
        href = await page.get_by_test_id("csv-link").get_attribute("href")
        assert href and "format=csv" in href and "unit=990100" in href
        r = await city.context.request.get(href)
        assert r.status == 200 and r.headers["content-type"].startswith("text/csv")
        text = (await r.body()).decode("utf-8-sig")
        assert "unit,incidents,open" in text and "990102" in text
        await page.screenshot(path=str(screenshots / "stats.png"), full_page=True)

        # Devices of one grid cell: the demo's 28 and the ones this module added.
        await page.goto(f"/devices?unit={GRID_B}")
        await expect(page.get_by_test_id("cell-row")).to_have_count(1)
        rows = page.get_by_test_id("device-row")
        await expect(rows.first).to_be_visible()
        assert await rows.count() >= 28
        await expect(page.locator(f'[data-testid=device-row][data-device-id="{device.device_id}"]')).to_contain_text(
            "在线"
        )
        await page.get_by_test_id("devices-state").select_option("offline")
        await expect(page.locator(f'[data-testid=device-row][data-device-id="{device.device_id}"]')).to_have_count(0)
        await page.screenshot(path=str(screenshots / "devices.png"), full_page=False)
        no_page_errors(city)
    finally:
        await city.close()


async def test_pages_and_static_files_are_served_from_the_api(base_url) -> None:
    import aiohttp

    async with aiohttp.ClientSession(base_url=base_url) as http:
        async with http.get("/", allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "/queue"
        for path in ("/login", "/queue", "/stats", "/devices", "/incidents/00000000-0000-0000-0000-000000000000"):
            async with http.get(path) as r:
                assert r.status == 200 and r.content_type == "text/html", path
                assert "script-src 'self'" in r.headers["Content-Security-Policy"]
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                body = await r.text()
                assert '<script type="module" src="/static/js/' in body
        async with http.get("/static/js/queue.js") as r:
            assert r.status == 200 and r.content_type in ("text/javascript", "application/javascript")
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert "innerHTML" not in await r.text()
        async with http.get("/static/js/nothing.js") as r:
            assert r.status == 404
        async with http.get("/static/../pages.py") as r:
            assert r.status in (403, 404)


async def test_injected_markup_in_every_text_renders_as_text(browser, base_url, devices) -> None:
    """Script in a note, a closing text, a device's address and resident note: on the incident
    page each shows as the very characters typed, never as an element, and nothing runs."""
    grid = "990104002002003"
    hostile = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    device = await devices(grid, kind="pendant", address=f"{hostile} 3号楼", note=hostile)
    opened = await device.press("alarm.panic")
    incident_id = opened["incident_id"]
    desk = await open_desk(browser, base_url, f"go-{grid}", path=f"/incidents/{incident_id}")
    try:
        page = desk.page
        for body in (
            {"action": "note", "text": hostile},
            {"action": "resolve", "outcome": "false_alarm", "text": f"' OR 1=1; -- {hostile}"},
        ):
            r = await desk.context.request.post(f"/api/v1/incidents/{incident_id}/actions", data=body)
            assert r.status == 200, await r.text()
        await page.reload()
        timeline = page.get_by_test_id("timeline-entry")
        await expect(timeline.and_(page.locator('[data-kind="note"]'))).to_contain_text(hostile)
        await expect(page.get_by_test_id("resident-note")).to_have_text(hostile)
        await expect(page.get_by_test_id("facts")).to_contain_text(f"{hostile} 3号楼")
        await expect(page.locator("body")).to_contain_text(f"' OR 1=1; -- {hostile}")
        assert await page.locator('img[src="x"]').count() == 0
        assert await page.locator("main script, body script:not([src])").count() == 0
        assert await page.evaluate("window.__xss") is None
        no_page_errors(desk)
    finally:
        await desk.close()

"""The mirror's reading of the registry while changes arrive (pure logic: the registry is a
list in memory here; tests/integration/test_device_mirror.py reads the real one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateways.device_mirror import DeviceMirror
from gateways.validation import DeviceCache, DeviceInfo


class Registry:
    """Pages of a sorted list of devices; `during` runs while the page is being read."""

    def __init__(self, ids: list[str]) -> None:
        self.rows = [DeviceInfo(d, "990102001001001", True) for d in sorted(ids)]
        self.during: dict[int, Callable[[], None]] = {}
        self.pages = 0

    async def __call__(self, device_id: str) -> DeviceInfo | None:
        return next((r for r in self.rows if r.device_id == device_id), None)

    async def many(self, device_ids: list[str]) -> dict[str, DeviceInfo]:
        return {r.device_id: r for r in self.rows if r.device_id in device_ids}

    async def page(self, after: str, limit: int) -> list[DeviceInfo]:
        self.pages += 1
        fn = self.during.get(self.pages)
        if fn is not None:
            fn()
        await asyncio.sleep(0)
        return [r for r in self.rows if r.device_id > after][:limit]


def mirror(registry: Registry, max_entries: int = 200_000) -> tuple[DeviceMirror, DeviceCache]:
    cache = DeviceCache(registry, ttl_s=300, max_entries=max_entries)
    return DeviceMirror(cache, registry, refresh_s=240), cache  # type: ignore[arg-type]


def forget(m: DeviceMirror, cache: DeviceCache, device_id: str | None) -> None:
    """What the intake does on a NOTIFY: the cache forgets, then the mirror is told."""
    if device_id is None:
        cache.clear()
    else:
        cache.forget(device_id)
    m.changed(device_id)


def test_every_device_is_read_in_pages_and_trusted_from_then(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("gateways.device_mirror.PAGE", 3)
    reg = Registry([f"d{i:02d}" for i in range(10)])
    m, cache = mirror(reg)
    assert asyncio.run(m.read()) == 10
    assert reg.pages == 5  # 3 + 3 + 3 + 1, then an empty page
    assert m.loaded.is_set() and m.reads == 1
    assert all(cache.fresh(f"d{i:02d}", time.monotonic()) for i in range(10))


def test_a_device_changed_during_the_read_is_not_left_as_it_was_read(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("gateways.device_mirror.PAGE", 3)
    reg = Registry([f"d{i:02d}" for i in range(10)])
    m, cache = mirror(reg)
    # d01 was read in the first page and changes while the second is read; d04 changes
    # while its own page is read (its row may be the old one).
    reg.during[2] = lambda: (forget(m, cache, "d01"), forget(m, cache, "d04"))
    asyncio.run(m.read())
    now = time.monotonic()
    assert not cache.fresh("d01", now) and not cache.fresh("d04", now)
    assert cache.fresh("d00", now) and cache.fresh("d05", now)


def test_a_cache_cleared_during_the_read_is_read_again(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("gateways.device_mirror.PAGE", 3)
    reg = Registry([f"d{i:02d}" for i in range(10)])
    m, cache = mirror(reg)
    reg.during[2] = lambda: forget(m, cache, None)  # the listening connection was lost
    asyncio.run(m.read())
    assert not any(cache.fresh(f"d{i:02d}", time.monotonic()) for i in range(10))
    assert m._again.is_set() and not m.loaded.is_set()  # another read comes at once


def test_a_registry_larger_than_the_cache_fills_it_and_no_more() -> None:
    reg = Registry([f"d{i:02d}" for i in range(10)])
    m, cache = mirror(reg, max_entries=4)
    assert asyncio.run(m.read()) == 4
    now = time.monotonic()
    assert [d for d in (f"d{i:02d}" for i in range(10)) if cache.fresh(d, now)] == ["d00", "d01", "d02", "d03"]

"""The benchmark's Postgres round-trip floor reads the CPU of both ends, against the real server."""

from __future__ import annotations

import pytest

from bench.floors import _process_cpu_s, postgres_round_trip_cpu

pytestmark = pytest.mark.stack


async def test_a_round_trip_is_timed_and_its_cpu_read_on_both_sides(env) -> None:  # type: ignore[no-untyped-def]
    rt = await postgres_round_trip_cpu(env.settings, 3000)
    assert rt["n"] == 3000
    assert rt["wall_us"] > 0
    # The server runs on this machine: its backend's share is read. 3,000 round trips cost it
    # 60-140 ms, several of the 10 ms ticks /proc's clock counts (500 cost 12-20 ms on a fast
    # hour, and read as 0 once).
    assert rt["server_cpu_us"] is not None and rt["server_cpu_us"] > 0
    assert rt["client_cpu_us"] > 0


def test_a_process_that_is_gone_has_no_cpu_figure() -> None:
    assert _process_cpu_s(2**22 + 1) is None  # above the kernel's largest pid

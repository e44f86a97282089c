"""The benchmark's search for the highest rate held (bench/search.py), against systems whose
limit is known."""

from __future__ import annotations

import asyncio

import pytest

from bench.search import geometric, highest_held

LADDER = geometric(100, 1.5, 20000)


def search(limit: float, ladder: list[float] | tuple[float, ...] = tuple(LADDER), refine: int = 2) -> tuple:
    tried: list[float] = []
    recoveries: list[float] = []

    async def measure(rate: float) -> bool:
        tried.append(rate)
        return rate <= limit

    async def recover() -> None:
        recoveries.append(tried[-1])

    best = asyncio.run(highest_held(measure, ladder, refine=refine, before_refine=recover))
    return best, tried, recoveries


def test_the_ladder_grows_by_half_in_whole_rates() -> None:
    assert LADDER[:7] == [100, 150, 225, 338, 506, 759, 1139]
    assert LADDER[-1] <= 20000


def test_the_gap_is_halved_twice_after_the_first_rate_not_held() -> None:
    best, tried, recoveries = search(800)
    assert tried == [100, 150, 225, 338, 506, 759, 1139, 949, 854]
    assert best == 759
    assert recoveries == [1139, 949]  # the system recovers before each step between the rungs


def test_a_limit_between_the_rungs_is_found_within_an_eighth_of_the_gap() -> None:
    for limit in (760, 900, 1000, 1138, 5000, 12345):
        best, _, _ = search(limit)
        assert best is not None and best <= limit
        lower = max(r for r in LADDER if r <= limit)
        upper = min(r for r in LADDER if r > limit)
        assert limit - best <= (upper - lower) / 4 + 1


def test_nothing_held_is_none_and_no_refinement() -> None:
    best, tried, recoveries = search(50)
    assert best is None and tried == [100] and recoveries == []


def test_everything_held_is_the_top_rung() -> None:
    best, tried, _ = search(10**9)
    assert best == LADDER[-1] and tried == LADDER


@pytest.mark.parametrize(("limit", "expected"), [(3000, 3000), (5000, 4000), (6500, 6000), (2100, 2000)])
def test_the_heartbeat_ladder_with_one_refinement(limit: int, expected: int) -> None:
    best, _, _ = search(limit, (2000, 4000, 8000, 16000, 32000), refine=1)
    assert best == expected

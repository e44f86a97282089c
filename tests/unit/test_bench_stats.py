"""The benchmark's per-second view of a step (bench/stats.py)."""

from __future__ import annotations

from bench.stats import worst_per_second


def test_the_worst_latency_of_each_second_by_press_time() -> None:
    pressed = {"a": 100.0, "b": 100.5, "c": 101.2, "d": 103.9, "e": 102.1}
    latency = {"a": 12.0, "b": 950.04, "c": 30.0, "d": 7.0}  # e never answered
    assert worst_per_second(["a", "b", "c", "d", "e"], pressed, latency) == [950.0, 30.0, None, 7.0]


def test_only_the_steps_presses_count() -> None:
    pressed = {"old": 10.0, "a": 50.0}
    assert worst_per_second(["a"], pressed, {"old": 9999.0, "a": 5.0}) == [5.0]
    assert worst_per_second([], pressed, {}) == []

"""Percentiles for the benchmark's tables."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[k]


def summary(values_ms: list[float]) -> dict[str, Any]:
    return {
        "n": len(values_ms),
        "p50": _r(pct(values_ms, 0.5)),
        "p99": _r(pct(values_ms, 0.99)),
        "p999": _r(pct(values_ms, 0.999)),
        "max": _r(max(values_ms) if values_ms else None),
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


def worst_per_second(ids: Iterable[str], pressed: dict[str, float], latency_ms: dict[str, float]) -> list[float | None]:
    """The worst latency of the presses made in each second of a step, by press time (None for a
    second whose presses all went unanswered, or that had none): whether a step's p99 is its
    steady state or a few stalls."""
    times = {e: pressed[e] for e in ids if e in pressed}
    if not times:
        return []
    t0 = min(times.values())
    worst: dict[int, float] = {}
    for e, t in times.items():
        if e in latency_ms:
            k = int(t - t0)
            worst[k] = max(worst.get(k, 0.0), latency_ms[e])
    seconds = int(max(times.values()) - t0) + 1
    return [round(worst[k], 1) if k in worst else None for k in range(seconds)]

"""Percentiles for the benchmark's tables."""

from __future__ import annotations

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

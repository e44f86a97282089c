"""In-process counters of a component (exported by /metrics later, logged on stop)."""

from __future__ import annotations

import weakref
from collections import Counter

_LIVE: weakref.WeakSet[Counters] = weakref.WeakSet()


def all_counters() -> dict[str, dict[str, int]]:
    """Every live component's counters, summed per component name."""
    out: dict[str, Counter[str]] = {}
    for c in list(_LIVE):
        out.setdefault(c.component, Counter()).update(c.snapshot())
    return {k: dict(v) for k, v in out.items()}


class Counters:
    def __init__(self, component: str) -> None:
        self.component = component
        self._c: Counter[str] = Counter()
        _LIVE.add(self)

    def inc(self, name: str, n: int = 1) -> None:
        self._c[name] += n

    def get(self, name: str) -> int:
        return self._c[name]

    def snapshot(self) -> dict[str, int]:
        return dict(self._c)

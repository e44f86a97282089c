"""The search for the highest rate a system holds: up a ladder of rates until one is not held,
then halve the gap between the last rate held and the first one not held, a few times."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable


def geometric(start: float, factor: float, limit: float) -> list[float]:
    """start, start × factor, ... up to limit (each rate rounded to a whole number)."""
    out, rate = [], start
    while rate <= limit:
        out.append(float(round(rate)))
        rate *= factor
    return out


async def highest_held(
    measure: Callable[[float], Awaitable[bool]],
    ladder: Iterable[float],
    *,
    refine: int,
    before_refine: Callable[[], Awaitable[None]] | None = None,
) -> float | None:
    """The highest rate `measure` held, or None if it held none. `measure(rate)` runs one step
    and says whether it held; `before_refine` runs before each step between the rungs (to let
    the system recover from the step it did not hold)."""
    best: float | None = None
    failed: float | None = None
    for rate in ladder:
        if not await measure(rate):
            failed = rate
            break
        best = rate
    if best is None or failed is None:
        return best
    lo, hi = best, failed
    for _ in range(refine):
        rate = float(round((lo + hi) / 2))
        if rate in (lo, hi):
            break
        if before_refine is not None:
            await before_refine()
        if await measure(rate):
            lo = best = rate
        else:
            hi = rate
    return best

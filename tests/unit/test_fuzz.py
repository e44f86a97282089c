"""The short fuzz run (the long one is `make fuzz`): 20,000 generated inputs through every
parser of outside input, no crash, no hang, every refusal with a reason."""

from __future__ import annotations

import time

from chaos import fuzz


def test_twenty_thousand_generated_inputs_no_crash_no_hang() -> None:
    t0 = time.monotonic()
    tally = fuzz.run(20_000, seed=int(t0) % 1000, hang_ms=2000)
    assert tally.crash_count == 0, fuzz.summary(tally, time.monotonic() - t0)
    assert not tally.hangs, fuzz.summary(tally, time.monotonic() - t0)
    assert tally.inputs == 20_000
    assert set(tally.per_target) == set(fuzz.TARGETS)
    # Both sides are reached: valid inputs pass, the rest are refused with a reason.
    assert tally.accepted > 1000
    reasons = {k.split(":")[1] for k in tally.rejected}
    assert {"malformed", "invalid", "too_large", "device_mismatch", "bad_topic", "unknown_type"} <= reasons

"""What the benchmark reads of the whole machine's CPU over a step (bench/procs.py MachineCpu)."""

from __future__ import annotations

import os
import time

from bench.procs import MachineCpu, machine_ticks


def test_the_ticks_are_the_first_line_of_proc_stat() -> None:
    ticks = machine_ticks()
    assert set(ticks) >= {"user", "system", "idle", "iowait", "steal"}
    assert all(v >= 0 for v in ticks.values())


def test_a_busy_core_shows_as_about_one_busy_core() -> None:
    m = MachineCpu()
    m.start()
    end = time.monotonic() + 0.5
    n = 0
    while time.monotonic() < end:  # this process keeps one core busy
        n += 1
    shares = m.shares()
    cores = os.cpu_count() or 1
    # At least most of the core this process kept busy (what the host stole of it shows as
    # stolen, not busy); never more than the machine has.
    assert shares["busy_cores"] + shares["stolen_cores"] >= 0.6
    assert shares["busy_cores"] <= cores + 0.05
    assert 0 <= shares["stolen_cores"] <= cores
    assert 0 <= shares["iowait_cores"] <= cores

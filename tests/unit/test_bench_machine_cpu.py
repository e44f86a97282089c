"""What the benchmark reads of the whole machine's CPU over a step (bench/procs.py MachineCpu)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.procs import MachineCpu, Watched, machine_ticks, tree_pids


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


def test_a_child_that_ends_during_a_step_keeps_its_cpu_in_its_tree() -> None:
    """A Postgres backend that closes during a step: its CPU stays in the server's share
    (it moves to its parent's reaped children), instead of leaving it, even below zero."""
    child = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5:\n    pass\n"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\ntime.sleep(0.5)\n"
            f"subprocess.run([sys.executable, '-c', {child!r}])\ntime.sleep(10)",
        ]
    )
    try:
        time.sleep(0.2)  # the parent runs; its child has not started
        tree = Watched("tree", parent.pid)
        tree.start()
        deadline = time.monotonic() + 10
        while len(tree_pids(parent.pid)) < 2:  # the child starts
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.02)
        while tree_pids(parent.pid) != [parent.pid]:  # and ends (spinning half a second)
            assert time.monotonic() < deadline, "the child never ended"
            time.sleep(0.05)
        time.sleep(0.1)  # and is waited for by its parent
        # Its half second of CPU stayed in the tree after it ended.
        assert tree.cpu() - tree.cpu0 >= 0.5
        assert tree.cpu_share() > 0
    finally:
        parent.kill()
        parent.wait()

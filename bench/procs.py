"""Processes of a benchmark run: the components as child processes, CPU and memory per process
read from /proc (CPU seconds from utime+stime, RSS from statm)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int, *, reaped: bool = False) -> float:
    """The CPU time of a process (utime + stime); with `reaped`, also that of its children
    that have exited and been waited for (cutime + cstime). Summed over a process tree with
    `reaped`, the total never shrinks when a child ends: its time moves to its parent's."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS


def rss_mib(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE / 2**20
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0


def tree_pids(pid: int) -> list[int]:
    """The process and its descendants (postgres backends, for one)."""
    out = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return out
    for c in children:
        out += tree_pids(int(c))
    return out


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM every process still running, wait for all of them together, SIGKILL the late."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def machine_ticks() -> dict[str, int]:
    """The whole machine's CPU time so far, in clock ticks, from the first line of /proc/stat."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    values = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return {n: int(v) for n, v in zip(names, values, strict=False)}


@dataclass
class MachineCpu:
    """What the whole machine did with its cores over a step, in cores: busy (user, system and
    interrupts, every process), waiting for the disk, and stolen (a virtual machine's time the
    host gave to someone else: a step with much of it ran on less than the machine's cores)."""

    ticks0: dict[str, int] = field(default_factory=dict)
    t0: float = 0.0

    def start(self) -> None:
        self.ticks0 = machine_ticks()
        self.t0 = time.monotonic()

    def shares(self) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        now = machine_ticks()
        d = {k: (now[k] - self.ticks0.get(k, 0)) / _TICKS / dt if dt > 0 else 0.0 for k in now}
        busy = sum(d.get(k, 0.0) for k in ("user", "nice", "system", "irq", "softirq"))
        return {
            "busy_cores": round(busy, 3),
            "iowait_cores": round(d.get("iowait", 0.0), 3),
            "stolen_cores": round(d.get("steal", 0.0), 3),
        }


@dataclass
class Watched:
    name: str
    pid: int
    tree: bool = True  # with its descendants (postgres backends); not for the generator, parent of the components
    cpu0: float = 0.0
    t0: float = 0.0
    rss_max: float = 0.0
    rss: list[float] = field(default_factory=list)

    def alive(self) -> bool:
        return Path(f"/proc/{self.pid}").exists()

    def pids(self) -> list[int]:
        return tree_pids(self.pid) if self.tree else [self.pid]

    def cpu(self) -> float:
        """CPU seconds so far; for a tree, with the children that have ended (a Postgres
        backend that closed during a step would otherwise take its time with it)."""
        return sum(cpu_seconds(p, reaped=self.tree) for p in self.pids())

    def start(self) -> None:
        self.cpu0 = self.cpu()
        self.t0 = time.monotonic()
        self.rss = []

    def sample(self) -> None:
        r = sum(rss_mib(p) for p in self.pids())
        self.rss.append(r)
        self.rss_max = max(self.rss_max, r)

    def cpu_share(self) -> float:
        """CPU used since start(), as a share of one core."""
        dt = time.monotonic() - self.t0
        used = self.cpu() - self.cpu0
        return used / dt if dt > 0 else 0.0


class Components:
    """`dispatch <component>` child processes, one per component, with the bench's settings."""

    def __init__(
        self, env: dict[str, str], names: list[str], log_dir: Path, groups: dict[str, list[str]] | None = None
    ) -> None:
        """One process per name: `dispatch <name>`, or `dispatch run <components...>` for a name
        in `groups` (several components in one process)."""
        self.env = env
        self.names = names
        self.groups = groups or {}
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in self.names:
            log = (self.log_dir / f"{name}.log").open("ab")
            argv = ["run", *self.groups[name]] if name in self.groups else [name]
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "dispatch.cli", *argv],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> dict[str, bool]:
        return {n: p.poll() is None for n, p in self.procs.items()}

    def stop(self) -> None:
        stop_processes(self.procs.values())


def service_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None

"""The faults: a component SIGKILLed and started again with the same instance id, a service of
the stack (Mosquitto, Kafka, Postgres) stopped and started again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.procs import REPO, Components, service_pid

STACK_SH = str(REPO / "deploy" / "stack.sh")


class ChaosComponents(Components):
    """`dispatch <component>` children that can be killed and started again one by one."""

    def spawn(self, name: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._offsets = getattr(self, "_offsets", {})
        path = self.log_dir / f"{name}.log"
        self._offsets[name] = path.stat().st_size if path.exists() else 0
        with path.open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "dispatch.cli", name],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def start(self) -> None:
        for name in self.names:
            self.spawn(name)

    async def wait_logged(self, name: str, needle: str, timeout: float = 60.0) -> None:
        """Until the component's log (since its last start) says `needle`, e.g. "gateway ready"
        (before it, nobody holds the shared subscription: the broker drops device events)."""
        path = self.log_dir / f"{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with path.open("rb") as f:
                f.seek(self._offsets.get(name, 0))
                if needle.encode() in f.read():
                    return
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited during startup; see {path}")
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{name} did not log {needle!r} within {timeout} s; see {path}")

    def kill(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


SERVICE_PID_FILES = {"mosquitto": "mosquitto/mosquitto.pid", "kafka": "kafka/kafka.pid"}


def stop_service(env: dict[str, str], name: str) -> None:
    """SIGTERM the service through its pid file (Postgres: pg_ctl stop -m fast)."""
    stack = Path(env["PINGAN_STACK_DIR"])
    if name == "postgres":
        pg_ctl = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1]
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(pg_ctl),
                "-D",
                str(stack / "pg" / "data"),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return
    pid = service_pid(stack / SERVICE_PID_FILES[name])
    if pid is None:
        raise RuntimeError(f"{name} is not running (no live pid in its pid file)")
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, 60):
        raise RuntimeError(f"{name} (pid {pid}) did not exit within 60 s of SIGTERM")


def stack_up(env: dict[str, str]) -> None:
    subprocess.run([STACK_SH, "up"], env=env, check=True, stdout=subprocess.DEVNULL)


async def restart_service(env: dict[str, str], name: str, down_s: float) -> float:
    """Stop, stay down `down_s` seconds, bring back with `deploy/stack.sh up`. Returns the
    seconds the service was unavailable (stop + down + start)."""
    t0 = time.monotonic()
    await asyncio.to_thread(stop_service, env, name)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(stack_up, env)
    return time.monotonic() - t0

"""A private mosquitto broker for tests (real broker, no mocks).

The broker runs from a temporary directory on a free 127.0.0.1 port with
``allow_anonymous false``, a password file written by
:func:`core.mosquitto_passwords.write_password_file`, an ACL file, persistence
and ``user root`` (mosquitto would otherwise drop privileges to the
``mosquitto`` user, which cannot read the tmp dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from core.mosquitto_passwords import hash_password, write_password_file

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

DEFAULT_USERS: Mapping[str, str] = {
    "platform": "platform-secret",
    "dev1": "dev1-secret",
    "dev2": "dev2-secret",
}

ACL = """\
# platform service account
user platform
topic readwrite #

# every other user: its own device topics only
pattern write dev/%u/#
pattern read rx/%u/#
"""

_START_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """One mosquitto process; can be killed (-9), restarted on the same port, reloaded."""

    def __init__(
        self,
        directory: Path,
        *,
        users: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_config: str = "",
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.directory = directory
        self.conf_path = directory / "mosquitto.conf"
        self.pid_file = directory / "mosquitto.pid"
        self.password_file = directory / "passwords"
        self.acl_file = directory / "acl"
        self.log_file = directory / "mosquitto.log"
        self.data_dir = directory / "data"
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.write_users(self.users)
        self.acl_file.write_text(ACL)
        self.conf_path.write_text(
            f"""\
user root
per_listener_settings false
listener {self.port} {self.host}
set_tcp_nodelay true
allow_anonymous false
password_file {self.password_file}
acl_file {self.acl_file}
persistence true
persistence_location {self.data_dir}/
pid_file {self.pid_file}
log_dest file {self.log_file}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
{extra_config}
"""
        )

    # -- credentials ---------------------------------------------------------

    def write_users(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)
        write_password_file(
            self.password_file,
            [(name, hash_password(password)) for name, password in sorted(users.items())],
        )

    # -- process control -------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def _spawn(self) -> None:
        assert self.process is None, "broker already running"
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {self.process.returncode}; log:\n{self.log_tail()}")
        try:
            pid_text = self.pid_file.read_text().strip()
        except FileNotFoundError:
            return False
        return pid_text == str(self.process.pid) and port_open(self.host, self.port)

    def start(self) -> None:
        self._spawn()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"mosquitto did not start; log:\n{self.log_tail()}")
            time.sleep(0.02)

    async def astart(self) -> None:
        """Like start() but without blocking the event loop."""
        self._spawn()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"mosquitto did not start; log:\n{self.log_tail()}")
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: a crash (no persistence dump, no clean TCP shutdown by the broker)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.kill()
        process.wait()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)  # in case a test paused it
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@contextlib.contextmanager
def running_mosquitto(
    directory: Path, *, users: Mapping[str, str] | None = None, extra_config: str = ""
) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(directory, users=users, extra_config=extra_config)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()

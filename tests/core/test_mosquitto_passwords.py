"""core.mosquitto_passwords against the real mosquitto_passwd and broker."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.mosquitto_passwords import (
    hash_password,
    reload_broker,
    verify_password,
    write_password_file,
)
from tests.core.mosquitto_fixture import DEFAULT_USERS, MosquittoBroker, running_mosquitto

MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
MOSQUITTO_PUB = shutil.which("mosquitto_pub") or "/usr/bin/mosquitto_pub"

HASH_7 = re.compile(r"^\$7\$(\d+)\$([A-Za-z0-9+/]{16})\$([A-Za-z0-9+/]{86}==)$")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    with running_mosquitto(tmp_path_factory.mktemp("mosquitto-pw")) as b:
        yield b


def can_login(broker: MosquittoBroker, username: str, password: str) -> bool:
    """Publish one QoS 1 message with the real mosquitto_pub client (MQTT 5)."""
    result = subprocess.run(
        [
            MOSQUITTO_PUB,
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-V",
            "mqttv5",
            "-u",
            username,
            "-P",
            password,
            "-i",
            f"pwtest-{username}-{time.monotonic_ns()}",
            "-t",
            f"dev/{username}/events",
            "-m",
            "x",
            "-q",
            "1",
        ],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return result.returncode == 0


# --------------------------------------------------------------------------- hashing


def test_hash_format_and_round_trip() -> None:
    encoded = hash_password("s3cret")
    match = HASH_7.match(encoded)
    assert match, encoded
    assert match.group(1) == "101"
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret ", encoded)
    assert not verify_password("", encoded)
    # Fresh random salt each time.
    assert hash_password("s3cret") != encoded


def test_hash_is_deterministic_for_a_given_salt() -> None:
    salt = bytes(range(12))
    a = hash_password("pw", salt=salt, iterations=1000)
    assert a == hash_password("pw", salt=salt, iterations=1000)
    assert a.startswith("$7$1000$AAECAwQFBgcICQoL$")
    assert verify_password("pw", a)
    with pytest.raises(ValueError):
        hash_password("pw", salt=b"short")
    with pytest.raises(ValueError):
        hash_password("pw", iterations=0)


def test_unicode_password() -> None:
    encoded = hash_password("平安-пароль")
    assert verify_password("平安-пароль", encoded)
    assert not verify_password("平安", encoded)


@pytest.mark.parametrize("bad", ["", "plain", "$7$", "$7$x$AAAA$AAAA", "$7$101$!!!$AAAA", "$5$abc$def", "$6$only"])
def test_verify_rejects_malformed(bad: str) -> None:
    assert verify_password("pw", bad) is False


@pytest.mark.parametrize("algorithm", ["sha512-pbkdf2", "sha512"])
def test_verify_accepts_mosquitto_passwd_output(tmp_path: Path, algorithm: str) -> None:
    path = tmp_path / "pw"
    subprocess.run(
        [MOSQUITTO_PASSWD, "-H", algorithm, "-c", "-b", str(path), "alice", "Wonder land:1"],
        check=True,
        capture_output=True,
    )
    username, encoded = path.read_text().strip().split(":", 1)
    assert username == "alice"
    assert encoded.startswith("$7$" if algorithm == "sha512-pbkdf2" else "$6$")
    if algorithm == "sha512-pbkdf2":
        assert HASH_7.match(encoded), encoded
    assert verify_password("Wonder land:1", encoded)
    assert not verify_password("Wonder land:2", encoded)


# --------------------------------------------------------------------------- the file


def test_write_password_file(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    entries = [("dev-1", hash_password("a")), ("officer.7", hash_password("b"))]
    assert write_password_file(path, entries) == 2
    lines = path.read_text().splitlines()
    assert lines == [f"{u}:{h}" for u, h in entries]
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwords"]  # no temp file left

    # Rewriting keeps the mode (and owner) of the existing file.
    path.chmod(0o600)
    assert write_password_file(path, entries[:1]) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_uid == os.getuid()
    assert len(path.read_text().splitlines()) == 1
    assert write_password_file(path, []) == 0
    assert path.read_text() == ""


@pytest.mark.parametrize(
    "username",
    ["", "a:b", "with space", "tab\tname", "new\nline", "cr\r", "x" * 257, "#comment", "nul\0"],
)
def test_invalid_usernames_rejected(tmp_path: Path, username: str) -> None:
    path = tmp_path / "passwords"
    path.write_text("keep:me\n")
    with pytest.raises(ValueError):
        write_password_file(path, [("good", hash_password("x")), (username, hash_password("x"))])
    assert path.read_text() == "keep:me\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwords"]


def test_longest_username_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    assert write_password_file(path, [("x" * 256, hash_password("x"))]) == 1
    with pytest.raises(ValueError):
        write_password_file(path, [("a", hash_password("x")), ("a", hash_password("y"))])
    with pytest.raises(ValueError):
        write_password_file(path, [("a", "not-a-hash")])
    with pytest.raises(ValueError):
        write_password_file(path, [("a", hash_password("x") + "\nroot:$7$1$x$y")])


# --------------------------------------------------------------------------- the broker


def test_broker_accepts_written_entries(broker: MosquittoBroker) -> None:
    # The fixture wrote the password file with write_password_file/hash_password.
    assert can_login(broker, "dev1", DEFAULT_USERS["dev1"])
    assert not can_login(broker, "dev1", "wrong-password")
    assert not can_login(broker, "nobody", "whatever")


def test_reload_adds_a_user(broker: MosquittoBroker) -> None:
    assert not can_login(broker, "newdev", "fresh-pw")
    users = dict(DEFAULT_USERS, newdev="fresh-pw")
    broker.write_users(users)
    assert reload_broker(broker.pid_file)
    deadline = time.monotonic() + 5
    while not can_login(broker, "newdev", "fresh-pw"):
        assert time.monotonic() < deadline, broker.log_tail()
        time.sleep(0.05)
    assert can_login(broker, "dev1", DEFAULT_USERS["dev1"])

    # Removing the user again takes effect after the next reload.
    broker.write_users(DEFAULT_USERS)
    assert reload_broker(broker.pid_file)
    deadline = time.monotonic() + 5
    while can_login(broker, "newdev", "fresh-pw"):
        assert time.monotonic() < deadline, broker.log_tail()
        time.sleep(0.05)


def test_mosquitto_passwd_entry_accepted_by_broker_after_reload(broker: MosquittoBroker, tmp_path: Path) -> None:
    """Mixed file: our entries plus one produced by mosquitto_passwd ($6$ legacy)."""
    other = tmp_path / "pw"
    subprocess.run(
        [MOSQUITTO_PASSWD, "-H", "sha512", "-c", "-b", str(other), "legacy", "old-pw"],
        check=True,
        capture_output=True,
    )
    legacy_hash = other.read_text().strip().split(":", 1)[1]
    entries = [(u, hash_password(p)) for u, p in DEFAULT_USERS.items()]
    write_password_file(broker.password_file, [*entries, ("legacy", legacy_hash)])
    assert reload_broker(broker.pid_file)
    deadline = time.monotonic() + 5
    while not can_login(broker, "legacy", "old-pw"):
        assert time.monotonic() < deadline, broker.log_tail()
        time.sleep(0.05)
    broker.write_users(DEFAULT_USERS)
    assert reload_broker(broker.pid_file)


def test_reload_broker_missing_or_dead(tmp_path: Path) -> None:
    assert reload_broker(tmp_path / "missing.pid") is False
    garbage = tmp_path / "garbage.pid"
    garbage.write_text("not-a-pid\n")
    assert reload_broker(garbage) is False
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead = tmp_path / "dead.pid"
    dead.write_text(f"{proc.pid}\n")
    assert reload_broker(dead) is False

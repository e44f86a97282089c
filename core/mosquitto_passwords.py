"""Mosquitto password file entries, written by the platform.

Postgres is the source of truth for MQTT credentials. The platform renders the
whole mosquitto ``password_file`` itself (atomically: temp file in the same
directory, fsync, rename, fsync the directory) and then sends SIGHUP to the
broker, which re-reads the password and ACL files.

Hash formats understood by mosquitto 2.0 (and produced by ``mosquitto_passwd``):

* ``$7$<iterations>$<base64 salt>$<base64 hash>``: PBKDF2-HMAC-SHA512, 12 byte
  salt, 64 byte derived key. ``mosquitto_passwd`` uses 101 iterations. This is
  what :func:`hash_password` writes.
* ``$6$<base64 salt>$<base64 hash>``: SHA512(password + salt) (mosquitto 1.6
  and earlier, ``mosquitto_passwd -H sha512``). Accepted by
  :func:`verify_password` only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import os
import secrets
import signal
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

import structlog

__all__ = [
    "DEFAULT_ITERATIONS",
    "SALT_LENGTH",
    "hash_password",
    "reload_broker",
    "validate_username",
    "verify_password",
    "write_password_file",
]

log = structlog.get_logger(__name__)

SALT_LENGTH = 12
"""Salt length in bytes used by mosquitto_passwd."""

DEFAULT_ITERATIONS = 101
"""PBKDF2 iteration count used by mosquitto_passwd (mosquitto 2.0)."""

_PBKDF2_LENGTH = 64
_MAX_USERNAME_LENGTH = 256
_NEW_FILE_MODE = 0o640


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS) -> str:
    """Return a mosquitto 2.0 ``$7$`` (PBKDF2-HMAC-SHA512) password hash."""
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    if salt is None:
        salt = secrets.token_bytes(SALT_LENGTH)
    elif len(salt) != SALT_LENGTH:
        # mosquitto decodes the salt into a fixed 12 byte buffer; other lengths
        # would not be verified correctly by the broker.
        raise ValueError(f"salt must be exactly {SALT_LENGTH} bytes")
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations, _PBKDF2_LENGTH)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Check ``password`` against a ``$7$`` or ``$6$`` mosquitto hash.

    Returns False for malformed or unknown hash formats. The digest comparison
    is constant time.
    """
    parts = encoded.strip().split("$")
    secret = password.encode("utf-8")
    try:
        if len(parts) == 5 and parts[0] == "" and parts[1] == "7":
            iterations = int(parts[2])
            if iterations < 1:
                return False
            salt = _unb64(parts[3])
            expected = _unb64(parts[4])
            if not expected:
                return False
            actual = hashlib.pbkdf2_hmac("sha512", secret, salt, iterations, len(expected))
            return hmac.compare_digest(actual, expected)
        if len(parts) == 4 and parts[0] == "" and parts[1] == "6":
            salt = _unb64(parts[2])
            expected = _unb64(parts[3])
            actual = hashlib.sha512(secret + salt).digest()
            return hmac.compare_digest(actual, expected)
    except (ValueError, binascii.Error):
        return False
    return False


def validate_username(username: str) -> None:
    """Raise ValueError unless ``username`` can be stored in a password file."""
    if not username:
        raise ValueError("username must not be empty")
    if len(username) > _MAX_USERNAME_LENGTH:
        raise ValueError(f"username longer than {_MAX_USERNAME_LENGTH} characters")
    if ":" in username:
        raise ValueError(f"username must not contain ':': {username!r}")
    if username.startswith("#"):
        # mosquitto skips password file lines starting with '#' (comments).
        raise ValueError(f"username must not start with '#': {username!r}")
    if any(ch.isspace() or not ch.isprintable() for ch in username):
        raise ValueError(f"username must not contain whitespace or control characters: {username!r}")


def _validate_hash(username: str, encoded: str) -> None:
    if not encoded or any(ch.isspace() or not ch.isprintable() for ch in encoded):
        raise ValueError(f"invalid password hash for user {username!r}")
    if not encoded.startswith(("$7$", "$6$")):
        raise ValueError(f"password hash for user {username!r} is not a $7$ or $6$ hash")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_password_file(path: str | os.PathLike[str], entries: Iterable[tuple[str, str]]) -> int:
    """Atomically (re)write a mosquitto password file; return the number of entries.

    ``entries`` are ``(username, encoded_hash)`` pairs (see :func:`hash_password`).
    Usernames are validated and must be unique. The new file gets the mode and
    owner of the file it replaces, or mode 0640 when there is none.
    """
    target = Path(path)
    lines: list[str] = []
    seen: set[str] = set()
    for username, encoded in entries:
        validate_username(username)
        _validate_hash(username, encoded)
        if username in seen:
            raise ValueError(f"duplicate username {username!r}")
        seen.add(username)
        lines.append(f"{username}:{encoded}\n")
    data = "".join(lines).encode("utf-8")

    try:
        existing: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        existing = None

    directory = target.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if existing is not None:
                os.fchmod(fh.fileno(), stat.S_IMODE(existing.st_mode))
                if (existing.st_uid, existing.st_gid) != (os.getuid(), os.getgid()):
                    try:
                        os.fchown(fh.fileno(), existing.st_uid, existing.st_gid)
                    except PermissionError:
                        log.warning(
                            "mosquitto_passwords.chown_failed",
                            path=str(target),
                            uid=existing.st_uid,
                            gid=existing.st_gid,
                        )
            else:
                os.fchmod(fh.fileno(), _NEW_FILE_MODE)
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise
    _fsync_dir(directory)
    log.info("mosquitto_passwords.written", path=str(target), entries=len(lines))
    return len(lines)


def reload_broker(pid_file: str | os.PathLike[str]) -> bool:
    """Send SIGHUP to the broker whose pid is in ``pid_file``.

    Mosquitto re-reads its password and ACL files on SIGHUP. Returns False (and
    logs) when the pid file is missing or unreadable or the process is gone.
    """
    pid_path = Path(pid_file)
    try:
        text = pid_path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        log.warning("mosquitto_passwords.reload_no_pid_file", pid_file=str(pid_path))
        return False
    try:
        pid = int(text)
    except ValueError:
        pid = 0
    if pid <= 0:
        log.warning("mosquitto_passwords.reload_bad_pid_file", pid_file=str(pid_path), content=text[:64])
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        log.warning("mosquitto_passwords.reload_process_gone", pid_file=str(pid_path), pid=pid)
        return False
    log.info("mosquitto_passwords.reload_sent", pid_file=str(pid_path), pid=pid)
    return True

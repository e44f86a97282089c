"""Officer passwords: argon2id (argon2-cffi), slow and salted; never logged or returned."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters

# Verified against when the officer has no password, so an unknown id costs as much time as a
# wrong password (nothing to learn from the timing).
_DUMMY = _hasher.hash("no password set")

MIN_LENGTH = 8


def hash_password(password: str) -> str:
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters")
    return _hasher.hash(password)


def verify(password: str, encoded: str | None) -> bool:
    try:
        return _hasher.verify(encoded or _DUMMY, password) and encoded is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False

"""Which Postgres failures are worth a retry."""

from __future__ import annotations

import asyncpg


def is_transient(exc: BaseException) -> bool:
    """Connection trouble, a restarting server, serialization or deadlock: try again."""
    if isinstance(
        exc,
        (
            OSError,
            ConnectionError,
            TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError,
            asyncpg.SerializationError,
            asyncpg.DeadlockDetectedError,
            asyncpg.AdminShutdownError,
            asyncpg.TooManyConnectionsError,
            # the connection broke in the middle of a transaction (the server restarted)
            asyncpg.InternalClientError,
        ),
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", "") or ""
        return sqlstate.startswith(("08", "57P", "53", "40"))
    return False

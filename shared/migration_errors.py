"""`MigrationError`: a database a service cannot use, and the few words that say why."""

from __future__ import annotations

import contextlib
import errno
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError


class MigrationError(Exception):
    """A database a service cannot use: unreachable, or not that service's.

    `url` is the database's URL without its password; `problem` says what is wrong."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"{url}: {problem}")
        self.url = url
        self.problem = problem


def shown(url: str) -> str:
    """`url` as it may be shown: without its password."""
    return make_url(url).render_as_string(hide_password=True)


def not_sqlite(path: Path | str) -> str:
    """The problem of a file that is not a SQLite database."""
    return f"{path} is not a SQLite database (move it away, or name another file)"


@contextlib.contextmanager
def reported(url: str) -> Iterator[None]:
    """A database that cannot be reached, or refuses us, as a `MigrationError`."""
    try:
        yield
    except Exception as exc:
        problem = next(filter(None, (_problem(url, e) for e in _causes(exc))), None)
        if problem is None:
            raise
        raise MigrationError(shown(url), problem) from exc


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps (SQLAlchemy's around its adapter's around the driver's)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        yield current
        orig = current.orig if isinstance(current, DBAPIError) else None
        current = orig if isinstance(orig, BaseException) else current.__cause__


# asyncpg's error for several addresses that all failed has no errno.
_NETWORK_ERRORS = {
    None,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.EADDRNOTAVAIL,
}


def _problem(url: str, exc: BaseException) -> str | None:
    """What keeps us from using the database, in a few words; None for other errors."""
    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    name = type(exc).__name__
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {parsed.host!r} ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused at {where}"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} (timed out)"
    if isinstance(exc, ConnectionError) or (
        isinstance(exc, OSError) and exc.errno in _NETWORK_ERRORS  # not a file's error
    ):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    if name == "InvalidCatalogNameError":  # asyncpg's
        return str(exc)
    if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
        return f"authentication failed for user {parsed.username!r} ({exc})"
    if name in ("CannotConnectNowError", "TooManyConnectionsError", "ConnectionRejectionError"):
        return f"{where} refused the connection: {exc}"
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
        return f"cannot open {parsed.database}: {exc}"
    if isinstance(exc, sqlite3.DatabaseError) and "file is not a database" in str(exc):
        return not_sqlite(parsed.database or "the file")
    return None

"""A transaction the database fails for reasons of its own (a deadlock, a lost connection,
a locked file) is not the event's fault: the consumer runs it again rather than
dead-lettering it. What the event's own statements cause is the event's."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from shared.database_trouble import database_trouble


class PgError(Exception):
    """An error as PostgreSQL's driver raises it: its SQLSTATE as `sqlstate`."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def sqlite_error(statement: str) -> sqlite3.Error:
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute(statement)
    except sqlite3.Error as exc:
        return exc
    finally:
        connection.close()
    raise AssertionError(f"{statement!r} did not fail")


class Locked(sqlite3.OperationalError):
    sqlite_errorname = "SQLITE_BUSY"


@pytest.mark.parametrize(
    ("error", "trouble"),
    [
        (DBAPIError("INSERT", {}, PgError("40P01", "deadlock detected")), True),
        (DBAPIError("INSERT", {}, PgError("40001", "could not serialize access")), True),
        (DBAPIError("INSERT", {}, PgError("57P01", "terminating connection")), True),
        (DBAPIError("INSERT", {}, Exception("gone"), connection_invalidated=True), True),
        (OperationalError("INSERT", {}, Locked("database is locked")), True),
        (DBAPIError("SELECT", {}, PgError("57014", "canceling statement: timeout")), False),
        (IntegrityError("INSERT", {}, PgError("23505", "duplicate key")), False),
        (OperationalError("SELECT", {}, sqlite_error("SELECT json_extract('{x', '$.a')")), False),
        (ValueError("seven is not a valid ping"), False),
    ],
    ids=[
        "deadlock",
        "serialization",
        "shutdown",
        "connection-lost",
        "sqlite-busy",
        "statement-timeout",
        "constraint",
        "sqlite-malformed-json",
        "handler",
    ],
)
def test_what_is_the_databases_trouble_and_what_is_the_events(
    error: BaseException, trouble: bool
) -> None:
    assert database_trouble(error) is trouble

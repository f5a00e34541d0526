"""A transaction the database fails for reasons of its own (a deadlock, a lost connection)
is not the event's fault: the consumer runs it again rather than dead-lettering it."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from shared.consumer import _database_trouble


class Deadlock(Exception):
    sqlstate = "40P01"  # as PostgreSQL's driver says it


class Duplicate(Exception):
    sqlstate = "23505"


@pytest.mark.parametrize(
    ("error", "trouble"),
    [
        (OperationalError("INSERT", {}, Exception("database is locked")), True),
        (DBAPIError("INSERT", {}, Deadlock("deadlock detected")), True),
        (DBAPIError("INSERT", {}, Exception("gone"), connection_invalidated=True), True),
        (IntegrityError("INSERT", {}, Duplicate("duplicate key")), False),
        (ValueError("seven is not a valid ping"), False),
    ],
    ids=["operational", "deadlock", "connection-lost", "constraint", "handler"],
)
def test_what_is_the_databases_trouble_and_what_is_the_events(
    error: BaseException, trouble: bool
) -> None:
    assert _database_trouble(error) is trouble

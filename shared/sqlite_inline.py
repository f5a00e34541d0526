"""SQLite for SQLAlchemy's asyncio engine, run inline on the event loop thread.

aiosqlite hands every call to a worker thread and back: ~90 µs per statement, and several
hops per SQLAlchemy execute (~400 µs). SQLite calls of a service's row-at-a-time work take
microseconds, so handoff's embedded mode runs them directly on the loop thread instead: a
connection here is an `aiosqlite`-shaped object whose coroutines finish without
suspending. Used through `create_async_engine(..., async_creator=connect_inline)` with the
stock `sqlite+aiosqlite` dialect. Long statements would block the loop; embedded mode
serves one machine, and writers never wait on SQLite's busy handler (see `Database`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class _InlineQueue:
    """Stands in for aiosqlite's work queue: runs the function now (SQLAlchemy uses it
    to set the isolation level)."""

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        self._cursor.execute(sql, () if parameters is None else parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class InlineConnection:
    """The parts of `aiosqlite.Connection` SQLAlchemy's aiosqlite dialect uses."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._tx = _InlineQueue()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    async def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        return await InlineCursor(self._conn.cursor()).execute(sql, parameters)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    async def stop(self) -> None:
        self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)


def inline_connector(database: str, *, timeout: float = 5.0) -> Callable[[], Any]:
    """An `async_creator` for `create_async_engine` opening `database` inline."""

    async def connect() -> InlineConnection:
        return InlineConnection(
            sqlite3.connect(
                database, timeout=timeout, check_same_thread=False, isolation_level=None
            )
        )

    return connect


def sqlite3_connection(driver_connection: Any) -> sqlite3.Connection | None:
    """The `sqlite3` connection under a SQLAlchemy driver connection opened inline, for
    statements run directly in its transaction (None for any other kind of connection)."""
    if isinstance(driver_connection, InlineConnection):
        return driver_connection._conn
    return None

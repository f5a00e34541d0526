"""The driver connections under a unit of work's session, for plain SQL on hot paths."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.pg_lists import packed, shifted
from shared.sqlite_inline import sqlite3_connection


class SqliteDriver:
    """The `sqlite3` connection under a unit of work's session when it runs inline
    (embedded mode), for plain SQL on hot paths: ~1 µs a statement, where
    `exec_driver_sql` costs ~40 µs (and SQLAlchemy's rows, per row). It is in the unit of
    work's transaction, which `session.connection()` began (`BEGIN IMMEDIATE`). Errors are
    raised as SQLAlchemy's (`IntegrityError`, ...), as from `exec_driver_sql`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.connection.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, params, exc, sqlite3.Error) from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self.connection.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, rows, exc, sqlite3.Error) from exc


# The session.info keys of a transaction's driver (`Database.transaction` drops them as
# the transaction ends).
SQLITE_DRIVER = "handoff.sqlite_driver"


async def sqlite_driver(session: AsyncSession) -> SqliteDriver | None:
    """The session's `SqliteDriver`; None unless it is SQLite run inline (another dialect,
    or SQLite through another driver)."""
    if SQLITE_DRIVER not in session.info:
        conn = await session.connection()
        handle = sqlite3_connection((await conn.get_raw_connection()).driver_connection)
        session.info[SQLITE_DRIVER] = SqliteDriver(handle) if handle is not None else None
    found: SqliteDriver | None = session.info[SQLITE_DRIVER]
    return found


class PgDriver:
    """The asyncpg connection under a unit of work's session, for plain SQL on hot paths.

    `exec_driver_sql` costs about 75 µs of CPU a statement on top of asyncpg's own work
    (an execution context, a cursor, a result, greenlet switches; measured with one
    `unnest` of 20 values: 143 against 67 µs). Statements here run on the same connection,
    in the session's transaction: it is begun here if no statement has begun it yet (as
    SQLAlchemy's adapter does before its first statement), and the unit of work commits or
    rolls it back. Errors are raised as SQLAlchemy's (`IntegrityError`, ...), as from
    `exec_driver_sql`. Rows are asyncpg records (indexable, unpackable like tuples).
    These statements bypass SQLAlchemy's engine events and `echo` logging.
    """

    def __init__(self, connection: AsyncConnection, adapted: Any) -> None:
        self._session_connection = connection
        self._adapted = adapted  # SQLAlchemy's AsyncAdapt_asyncpg_connection
        self._connection = adapted.driver_connection
        self._dbapi_error = connection.dialect.loaded_dbapi.Error
        self._at_commit: list[PgWrite] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        """The rows of `sql`; its text lists travel packed when they can (`pg_lists`)."""
        return await self._fetch(sql, args)

    async def _fetch(self, sql: str, args: Sequence[Any], *, begin: bool = True) -> list[Any]:
        statement, values = packed(sql, args)
        try:
            if begin:
                await self._begin()
            return list(await self._connection.fetch(statement, *values))
        except Exception as exc:
            raise await self._failed(sql, args, exc) from exc

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            await self._begin()
            await self._connection.executemany(sql, rows)
        except Exception as exc:
            raise await self._failed(sql, rows, exc) from exc

    async def write(self, writes: Sequence[PgWrite]) -> None:
        """Run `writes` now, as one statement: one round trip for all.

        They run as one statement's parts do: on one snapshot, in no set order, none
        seeing another's rows, so they must not touch the same rows (two upserts of one
        key fail); inserts into different tables, or of different keys, are what fits.
        """
        await self._write(writes, begin=True)

    async def _write(self, writes: Sequence[PgWrite], *, begin: bool) -> None:
        if not writes:
            return
        shape = tuple((w.ctes, w.statement) for w in writes)
        sql, counts = _combined(shape)
        for write, count in zip(writes, counts, strict=True):
            if len(write.args) != count:
                raise ValueError(f"{count} parameters, {len(write.args)} values: {write.statement}")
        await self._fetch(sql, [arg for write in writes for arg in write.args], begin=begin)

    def write_at_commit(self, write: PgWrite) -> None:
        """Run `write` as the unit of work's last statement, together with every other
        write deferred so (the outbox's events, staged rows, the inbox's record of a
        batch; see `write` for what may go together): one round trip where each took one.
        Nothing earlier in the unit of work sees it, nor does any before-commit hook: it is
        sent after all of them (`write_deferred`). A hook's statement that must come after
        them sends them first (`write_deferred_now`)."""
        self._at_commit.append(write)

    async def write_deferred_now(self) -> None:
        """Send the writes deferred so far now, in the unit of work's transaction (begun
        here if need be), for a statement that must come after them."""
        writes, self._at_commit = self._at_commit, []
        await self.write(writes)

    async def write_deferred(self) -> None:
        """Send the writes deferred to the commit (`write_at_commit`), as the unit of work
        ends. When it has sent nothing else, that one statement is all of it: sent alone,
        without BEGIN and COMMIT (PostgreSQL runs a lone statement atomically, and
        SQLAlchemy's commit then has no transaction to end), one round trip instead of
        three. A producer's transaction of events, or a consumer's batch whose handlers
        only stage rows, comes to that."""
        writes, self._at_commit = self._at_commit, []
        await self._write(writes, begin=False)  # (a begun transaction goes on)

    async def _begin(self) -> None:
        adapted = self._adapted
        if not adapted._started:
            async with adapted._execute_mutex:
                if not adapted._started:
                    await adapted._start_transaction()

    async def _failed(self, sql: str, args: Any, exc: Exception) -> Exception:
        """SQLAlchemy's exception for `exc`. A lost connection is handled as SQLAlchemy
        handles its own: one statement through it lets SQLAlchemy see the disconnect and
        discard this connection and every pooled one made before it (a server restart
        ended them all), so only the work in flight fails."""
        try:
            self._adapted._handle_exception(exc)  # raises the DB-API error SQLAlchemy maps
        except Exception as dbapi_error:
            exc = dbapi_error
        lost = self._connection.is_closed()
        if lost:
            with contextlib.suppress(Exception):
                await self._session_connection.exec_driver_sql("SELECT 1")
        return DBAPIError.instance(sql, args, exc, self._dbapi_error, connection_invalidated=lost)


@dataclass(frozen=True, slots=True)
class PgWrite:
    """A data-modifying statement for `PgDriver.write`: `statement` (an `INSERT ...`)
    after the `WITH` parts it needs (`ctes`, each `name AS (...)`, their names unique among
    the writes sent together), parameters numbered from $1 across both, filled by `args`.
    Sent with others, it is one part of their statement (see `PgDriver.write`)."""

    statement: str
    args: Sequence[Any]
    ctes: tuple[str, ...] = ()


_Shape = tuple[tuple[tuple[str, ...], str], ...]  # each write's (ctes, statement)
_combined_statements: dict[_Shape, tuple[str, list[int]]] = {}


def _combined(shape: _Shape) -> tuple[str, list[int]]:
    """One statement running the writes of `shape` (all but the last as `WITH` parts),
    their parameters renumbered one after another; and how many each takes."""
    found = _combined_statements.get(shape)
    if found is not None:
        return found
    clauses: list[str] = []
    counts: list[int] = []
    last = ""
    for index, (ctes, statement) in enumerate(shape):
        offset = sum(counts)
        texts = [shifted(text, offset) for text in (*ctes, statement)]
        counts.append(max(count for _, count in texts))
        *parts, last = [text for text, _ in texts]
        clauses += parts
        if index < len(shape) - 1:
            clauses.append(f"_w{index} AS ({last})")
    names = [clause.split(" AS ", 1)[0] for clause in clauses]
    if len(set(names)) < len(names):
        raise ValueError(f"WITH parts of one name in writes sent together: {names}")
    sql = f"WITH {', '.join(clauses)} {last}" if clauses else last
    if len(_combined_statements) >= 1024:  # bounded: statements are a program's own texts
        _combined_statements.clear()
    found = _combined_statements[shape] = (sql, counts)
    return found


PG_DRIVER = "handoff.pg_driver"


async def pg_driver(session: AsyncSession) -> PgDriver:
    """The session's `PgDriver` (PostgreSQL only; found once per unit of work)."""
    found: PgDriver | None = session.info.get(PG_DRIVER)
    if found is None:
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        found = session.info[PG_DRIVER] = PgDriver(conn, raw.dbapi_connection)
    return found

"""Intake's hot statements as plain driver SQL, run in the session's transaction.

A webhook batch or an import batch runs about ten small statements. Through SQLAlchemy
each cost more than the database's own work: an expanding `IN` list is re-rendered on
every call (and on PostgreSQL every new list length is a new prepared statement), and
each execution builds an execution context and result. Here every statement is text
written once per dialect:

- SQLite: run on the session's `sqlite3` connection itself
  (`shared.db_drivers.SqliteDriver`), inside the transaction the unit of work began
  (`BEGIN IMMEDIATE`); lists are `IN (?, ...)` with one text per length. Values are
  converted with the dialect's own bind and result processors (datetimes, JSON), so rows
  read and written are those SQLAlchemy would have.
- PostgreSQL: on the session's asyncpg connection (`shared.db_drivers.PgDriver`, in the
  unit of work's transaction) with one array parameter per list, one text whatever the
  length; each value of a lookup is its own index probe (`unnest` +
  `LATERAL (... LIMIT 1)`), so that a plan PostgreSQL caches while the tables are empty
  still looks values up instead of scanning; staged rows are written as the unit of work
  commits, in the statement that writes its events (`PgDriver.write_at_commit`, an array
  per column).

Errors surface as SQLAlchemy's (`IntegrityError`, ...), as from any other statement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.bulk_writes import convert_columns, insert_many, pg_insert
from shared.db import before_commit
from shared.db_drivers import PgDriver, PgWrite, SqliteDriver, pg_driver, sqlite_driver

_KEY = "handoff.intake.driver_sql"


class DriverSql:
    """The session's connection, for statements written for its dialect."""

    def __init__(
        self, session: AsyncSession, conn: AsyncConnection, sqlite: SqliteDriver | None
    ) -> None:
        self.session = session
        self.conn = conn
        self.dialect: Dialect = conn.dialect
        self.postgres = self.dialect.name == "postgresql"
        self._sqlite = sqlite
        self._pg: PgDriver | None = None
        self._staged: list[tuple[Table, tuple[str, ...], Sequence[Sequence[Any]]]] = []

    @classmethod
    async def of(cls, session: AsyncSession) -> DriverSql:
        """The session's (found once per unit of work; this begins its transaction)."""
        found: DriverSql | None = session.info.get(_KEY)
        if found is None:
            conn = await session.connection()
            inline = await sqlite_driver(session) if conn.dialect.name == "sqlite" else None
            found = cls(session, conn, inline)
            if found.postgres:
                found._pg = await pg_driver(session)
            session.info[_KEY] = found
        return found

    async def fetch(self, query: Query, params: Sequence[Any], *lists: Sequence[Any]) -> list[Any]:
        """The rows of `query` with `params`, then one value list per `IN` of the query."""
        sql = query.text(self.dialect.name, [len(values) for values in lists])
        if self._pg is not None:
            return await self._pg.fetch(sql, *params, *(list(values) for values in lists))
        flat = (*params, *(v for values in lists for v in values))
        if self._sqlite is None:  # SQLite through another driver
            return list((await self.conn.exec_driver_sql(sql, flat)).all())
        return self._sqlite.fetch(sql, flat)

    async def insert(
        self, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """INSERT `rows` (values in `columns` order), as `shared.bulk_writes.insert_many` would."""
        if not rows:
            return
        if self._sqlite is None:
            await insert_many(self.session, table, columns, rows)
            return
        sql, processors = self._insert_statement(table, tuple(columns))
        await self.executemany(sql, _processed(rows, processors))

    async def stage(
        self, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """INSERT `rows` by the time the unit of work commits (they are not visible to
        reads earlier in it). On PostgreSQL the tables staged in a unit of work are written
        just before it commits, in the one statement that also writes its events
        (`PgDriver.write_at_commit`; an array per column): one round trip for all. SQLite,
        whose statements cost no round trip, inserts them now."""
        if not rows:
            return
        if not self.postgres:
            await self.insert(table, columns, rows)
            return
        if not self._staged:
            before_commit(self.session, self._write_staged)
        self._staged.append((table, tuple(columns), rows))

    async def write_staged(self) -> None:
        """Write what is staged now, in one statement, for statements later in the unit of
        work that must see it (on SQLite it already is)."""
        if self._pg is not None:
            await self._pg.write(self._staged_writes())

    async def _write_staged(self, _session: AsyncSession) -> None:
        assert self._pg is not None  # (staged only on PostgreSQL)
        for write in self._staged_writes():
            self._pg.write_at_commit(write)

    def _staged_writes(self) -> list[PgWrite]:
        staged, self._staged = self._staged, []
        return [pg_insert(self.dialect, table, columns, rows) for table, columns, rows in staged]

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """SQLite only: `sql` (with `?` parameters) once per row, one call."""
        if self._sqlite is None:
            await self.conn.exec_driver_sql(sql, [tuple(row) for row in rows])
            return
        self._sqlite.executemany(sql, rows)

    def bind(self, table: Table, column: str) -> Callable[[Any], Any] | None:
        """The dialect's bind processor for a column (None: the value goes as it is)."""
        key = (self.dialect.name, table.name, column, "bind")
        if key not in _processors:
            impl = table.c[column].type.dialect_impl(self.dialect)
            _processors[key] = impl.bind_processor(self.dialect)
        return _processors[key]

    def result(self, table: Table, column: str) -> Callable[[Any], Any] | None:
        """The dialect's result processor for a column (None: the value is as read)."""
        key = (self.dialect.name, table.name, column, "result")
        if key not in _processors:
            impl = table.c[column].type.dialect_impl(self.dialect)
            _processors[key] = impl.result_processor(self.dialect, None)
        return _processors[key]

    def _insert_statement(self, table: Table, columns: tuple[str, ...]) -> tuple[str, _Processors]:
        key = (self.dialect.name, table.name, columns)
        if key not in _inserts:
            quote = self.dialect.identifier_preparer
            names = ", ".join(quote.quote(c) for c in columns)
            marks = ", ".join("?" * len(columns))
            sql = f"INSERT INTO {quote.format_table(table)} ({names}) VALUES ({marks})"  # noqa: S608
            processors = [
                (i, process)
                for i, name in enumerate(columns)
                if (process := self.bind(table, name)) is not None
            ]
            _inserts[key] = (sql, processors)
        return _inserts[key]


class Query:
    """One SELECT, written for SQLite (`?`, `IN ({0})`) and PostgreSQL (`$n`, arrays).

    `sqlite` has a `{n}` placeholder per list, filled with as many `?` as it has values;
    `postgres` takes each list as one array parameter (empty: SQLite only).
    """

    def __init__(self, *, sqlite: str, postgres: str) -> None:
        self.sqlite = sqlite
        self.postgres = postgres
        self._by_lengths: dict[tuple[int, ...], str] = {}

    def text(self, dialect: str, lengths: Sequence[int]) -> str:
        if dialect == "postgresql":
            return self.postgres
        key = tuple(lengths)
        sql = self._by_lengths.get(key)
        if sql is None:
            if len(self._by_lengths) >= 512:  # bounded: one text per combination of lengths
                self._by_lengths.clear()
            sql = self._by_lengths[key] = self.sqlite.format(*(", ".join("?" * n) for n in lengths))
        return sql


_Processors = list[tuple[int, Callable[[Any], Any]]]  # (position, the column's processor)
_processors: dict[tuple[str, str, str, str], Callable[[Any], Any] | None] = {}
_inserts: dict[tuple[str, str, tuple[str, ...]], tuple[str, _Processors]] = {}


def _processed(rows: Sequence[Sequence[Any]], processors: _Processors) -> Sequence[Sequence[Any]]:
    """The rows with the columns that have a processor converted (column by column: a
    column holding one value throughout, a batch's timestamp, is converted once)."""
    if not processors:
        return rows
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    convert_columns(columns, processors)
    return list(zip(*columns, strict=True))

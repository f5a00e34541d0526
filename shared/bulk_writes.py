"""Bulk writes in a unit of work: staged and many-row inserts, SQLite upserts returning rows."""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import before_commit
from shared.db_drivers import PG_DRIVER, PgWrite, pg_driver, sqlite_driver


def stage_insert(session: AsyncSession, table: Table, row: dict[str, Any]) -> None:
    """Insert `row` just before the unit of work commits, batched with the table's others.

    Row-at-a-time handlers get bulk-insert speed (one `insert_many` when the rows have one
    shape; on PostgreSQL a part of the unit of work's last statement, `write_at_commit`);
    the rows are not visible to reads earlier in the same transaction.
    """
    key = f"handoff.staged.{table.name}"
    rows: list[dict[str, Any]] | None = session.info.get(key)
    if rows is None:
        rows = session.info[key] = []

        async def flush(flushing: AsyncSession) -> None:
            # one statement per run of rows naming the same columns, in the order staged
            for columns, shaped in itertools.groupby(flushing.info.pop(key, []), key=tuple):
                run = list(shaped)
                if not _no_python_defaults(table, columns):
                    # a left-out column has a default only SQLAlchemy's INSERT applies; it
                    # goes now, so what was staged before it goes first (foreign keys)
                    if (driver := flushing.info.get(PG_DRIVER)) is not None:
                        await driver.write_deferred_now()
                    await flushing.execute(insert(table), run)
                    continue
                values = [tuple(r.values()) for r in run]
                dialect = flushing.bind.dialect
                if dialect.name == "postgresql":
                    write = pg_insert(dialect, table, columns, values)
                    (await pg_driver(flushing)).write_at_commit(write)
                else:
                    await insert_many(flushing, table, columns, values)

        before_commit(session, flush)
    rows.append(row)


def _no_python_defaults(table: Table, columns: tuple[str, ...]) -> bool:
    """True when the columns left out of `columns` get no client-side default (which only
    SQLAlchemy's own insert applies)."""
    return all(c.default is None for c in table.c if c.name not in columns)


async def insert_many(
    session: AsyncSession,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    skip_conflicts: bool = False,
) -> None:
    """INSERT `rows` (value tuples in `columns` order) into `table` in one go; with
    `skip_conflicts`, a row that would violate a unique constraint is left out
    (`ON CONFLICT DO NOTHING`) instead of failing the statement.

    Writes what `session.execute(insert(table), [dict, ...])` writes, without SQLAlchemy's
    per-row parameter handling (~6 µs a row): the statement is compiled once per dialect
    and only columns whose type has a bind processor (JSON; datetimes on SQLite) are
    converted, with the dialect's own processors. Values must be what the column types
    accept; no defaults are applied for missing columns beyond the database's own. SQLite
    gets one executemany; PostgreSQL (asyncpg) one statement with an array per column
    (`unnest`) rather than one execution per row.
    """
    if not rows:
        return
    connection = await session.connection()
    sql, order, processors, arrays = _insert_many_statement(
        table, tuple(columns), connection.dialect, skip_conflicts
    )
    if arrays:
        write = pg_insert(connection.dialect, table, columns, rows, skip_conflicts=skip_conflicts)
        await (await pg_driver(session)).fetch(write.statement, *write.args)
        return
    params: list[tuple[Any, ...]]
    if order is None and not processors:
        params = [tuple(row) for row in rows]
    else:
        params = []
        last: list[tuple[Any, Any]] = [(_NOTHING, None)] * len(processors)
        for row in rows:
            values = list(row) if order is None else [row[i] for i in order]
            for n, (index, process) in enumerate(processors):
                value = values[index]
                seen, converted = last[n]
                if value is not seen:  # a batch often repeats one value (its timestamp)
                    converted = process(value)
                    last[n] = (value, converted)
                values[index] = converted
            params.append(tuple(values))
    if (inline := await sqlite_driver(session)) is not None:
        inline.executemany(sql, params)
    else:
        await connection.exec_driver_sql(sql, params)


def pg_insert(
    dialect: Dialect,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    skip_conflicts: bool = False,
) -> PgWrite:
    """`insert_many`'s statement on PostgreSQL (asyncpg), as a `PgWrite` to send now or
    with others (`PgDriver.write`, `write_at_commit`): an array per column, converted with
    the dialect's processors (column by column: a column holding one value throughout, a
    batch's timestamp, is converted once)."""
    sql, order, processors, arrays = _insert_many_statement(
        table, tuple(columns), dialect, skip_conflicts
    )
    if not arrays:
        raise ValueError(
            f"an INSERT of arrays is for PostgreSQL through asyncpg, not {dialect.name}"
        )
    given: list[Sequence[Any]] = list(zip(*rows, strict=True))
    values = given if order is None else [given[i] for i in order]
    convert_columns(values, processors)
    return PgWrite(sql, [list(column) for column in values])


def convert_columns(
    columns: list[Sequence[Any]], processors: Sequence[tuple[int, Callable[[Any], Any]]]
) -> None:
    """Convert, in place, the columns that have a processor (position, processor), column by
    column: a column holding one value throughout, a batch's timestamp, is converted once."""
    for index, process in processors:
        column = columns[index]
        first = column[0]
        if all(value is first for value in column):
            columns[index] = [process(first)] * len(column)
        else:
            columns[index] = [process(value) for value in column]


_NOTHING = object()
# SQL, the order of the values (None: as given), bind processors by position, arrays or rows
_InsertMany = tuple[str, list[int] | None, list[tuple[int, Callable[[Any], Any]]], bool]
_insert_many_cache: dict[tuple[Table, tuple[str, ...], str, bool], _InsertMany] = {}


def _insert_many_statement(
    table: Table, columns: tuple[str, ...], dialect: Dialect, skip_conflicts: bool
) -> _InsertMany:
    key = (table, columns, dialect.name, skip_conflicts)
    cached = _insert_many_cache.get(key)
    if cached is None:
        compiled = insert(table).compile(dialect=dialect, column_keys=list(columns))
        positions = list(compiled.positiontup or ())
        if sorted(positions) != sorted(columns):
            raise ValueError(f"cannot insert {columns} into {table.name} positionally")
        order = [columns.index(name) for name in positions]
        processors: list[tuple[int, Callable[[Any], Any]]] = []
        for index, name in enumerate(positions):
            process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors.append((index, process))
        ordered = None if order == sorted(order) else order
        sql = compiled.string
        arrays = dialect.name == "postgresql" and dialect.driver == "asyncpg"
        if arrays:  # asyncpg's $n parameters, one array per column
            quote = dialect.identifier_preparer
            unnest = ", ".join(
                f"${n}::{table.c[name].type.compile(dialect=dialect)}[]"
                for n, name in enumerate(positions, 1)
            )
            names = ", ".join(quote.quote(name) for name in positions)
            into = f"INSERT INTO {quote.format_table(table)} ({names})"  # names from metadata
            sql = f"{into} SELECT * FROM unnest({unnest})"  # noqa: S608
        if skip_conflicts:  # the same clause on both: SQLite >= 3.24 and PostgreSQL
            sql += " ON CONFLICT DO NOTHING"
        cached = _insert_many_cache[key] = (sql, ordered, processors, arrays)
    return cached


# Host parameters one SQLite statement may take (SQLITE_MAX_VARIABLE_NUMBER's default).
SQLITE_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


async def sqlite_rows_returning(
    session: AsyncSession,
    head: str,
    tail: str,
    rows: Sequence[Sequence[Any]],
    *,
    shared: Sequence[Any] = (),
) -> list[Any]:
    """Run `head VALUES (...), (...) tail` on SQLite, a VALUES group per row, and return
    every statement's rows (`tail` holds the `ON CONFLICT ... RETURNING ...`).

    For upserts with RETURNING, which SQLAlchemy cannot cache: built from its constructs,
    such a statement is compiled again on every execution (~0.2 ms). Here the text is made
    by string joins, in as few statements as SQLite's parameter limit allows. `shared`
    values are the same for every row: a row's group names them as `?1`, `?2`, ... and its
    own values follow, so they are passed once per statement.
    """
    if not rows:
        return []
    conn = await session.connection()
    inline = await sqlite_driver(session)
    width, fixed = len(rows[0]), len(shared)
    per_statement = max(1, (SQLITE_MAX_VARIABLES - fixed) // width)
    out: list[Any] = []
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        sql = _values_statement(head, tail, width, fixed, len(chunk))
        params = (*shared, *itertools.chain.from_iterable(chunk))
        if inline is None:
            out += (await conn.exec_driver_sql(sql, params)).all()
        else:
            out += inline.fetch(sql, params)
    return out


_values_groups: dict[tuple[int, int], list[str]] = {}


def _values_statement(head: str, tail: str, width: int, fixed: int, count: int) -> str:
    """`head VALUES (...), ... tail` for `count` rows of `width` values after `fixed` shared
    ones (see `sqlite_rows_returning`). Each row's `(...)` is written once per shape and
    kept (writing a 1,000-row statement's out took ~0.6 ms; joining them, ~8 µs)."""
    groups = _values_groups.setdefault((width, fixed), [])
    if len(groups) < count:
        common = "".join(f"?{n}, " for n in range(1, fixed + 1))
        for row in range(len(groups), count):
            first = fixed + row * width
            own = ", ".join(f"?{first + k}" for k in range(1, width + 1))
            groups.append(f"({common}{own})")
    return f"{head} VALUES {', '.join(groups[:count])} {tail}"

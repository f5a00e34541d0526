"""Database access: one async engine per service, units of work with after-commit hooks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import MetaData, Table, event, insert, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.pg_lists import packed, shifted
from shared.sqlite_checkpoint import WalCheckpointer
from shared.sqlite_inline import inline_connector, sqlite3_connection

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

T = TypeVar("T")
AFTER_COMMIT = "handoff.after_commit"
BEFORE_COMMIT = "handoff.before_commit"
WRITE_INTENT = "handoff_write_intent"


def new_metadata() -> MetaData:
    """A service's table metadata with stable constraint names (for Alembic)."""
    return MetaData(naming_convention=NAMING_CONVENTION)


class Database:
    """One service's database: engine, sessions and transactions.

    Args:
        url: SQLAlchemy async URL (`sqlite+aiosqlite:///...` or `postgresql+asyncpg://...`).
        echo: log SQL statements.
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self.engine: AsyncEngine = _create_engine(url, echo=echo)
        # Units of work take SQLite's write lock up front; plain reads stay deferred.
        writer = self.engine.execution_options(**{WRITE_INTENT: True})
        self._sessions = async_sessionmaker(writer, expire_on_commit=False)
        self._sqlite_writer = asyncio.Lock() if self.dialect == "sqlite" else None
        database = make_url(url).database
        self._checkpointer = (
            WalCheckpointer(database)
            if self.dialect == "sqlite" and database and database != ":memory:"
            else None
        )

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits on success, rolls back on error, then runs after-commit hooks."""
        if self._checkpointer is not None and not self._checkpointer.running:
            self._checkpointer.start()
        async with self._write_turn():
            session = self._sessions()
            try:
                if self._checkpointer is not None:
                    await self._checkpointer.before_write()
                try:
                    async with session.begin():
                        yield session
                        # A hook may register more hooks (a flush that stages rows): run
                        # until none.
                        while flushes := session.info.pop(BEFORE_COMMIT, None):
                            for flush in flushes:
                                await flush(session)
                        # PostgreSQL's deferred writes go last, after every hook, together
                        if (driver := session.info.get(_PG_DRIVER)) is not None:
                            await driver.write_deferred()
                finally:
                    # the drivers belong to this transaction's connection, not the session
                    session.info.pop(_PG_DRIVER, None)
                    session.info.pop(_SQLITE_DRIVER, None)
                hooks = session.info.pop(AFTER_COMMIT, [])
            except BaseException:
                # as `async with session` closes: in a task of its own, run to its end even
                # if this one is cancelled meanwhile (a rollback may wait on the database)
                await session.__aexit__(*sys.exc_info())
                raise
            if session.in_transaction():  # (work that committed and began again itself)
                await session.__aexit__(None, None, None)
            else:
                # Committed: the connection is back in the pool already and closing only
                # clears the session (no wait on the database), so it runs here; through
                # `async with session` it ran in a task of its own, three turns of the event
                # loop per unit of work (one is kept, below).
                await session.close()
        for hook in hooks:  # after the writer turn is released
            hook()
        # One turn of the event loop for the other tasks, as a unit of work ends. On embedded
        # SQLite nothing in it suspends, so a task doing units of work back to back (a relay
        # draining a backlog, a busy producer) would otherwise keep the loop to itself: the
        # relay and consumers then ran late and in tiny batches, and LocalBus's p99 at 5,000
        # events/s went from ~20 ms to ~2 s.
        await asyncio.sleep(0)

    async def run(
        self, work: Callable[[AsyncSession], Awaitable[T]], *, conflict_retries: int = 1
    ) -> T:
        """Run `work` in a unit of work, again (from scratch) if it lost a uniqueness race.

        Two concurrent transactions creating the same row: one fails with a unique
        violation; run again, it finds the other's row and does the right thing.
        """
        for attempt in range(conflict_retries + 1):
            try:
                async with self.transaction() as session:
                    return await work(session)
            except IntegrityError:
                if attempt == conflict_retries:
                    raise
        raise AssertionError("unreachable")

    def _write_turn(self) -> AbstractAsyncContextManager[object]:
        # SQLite has one writer at a time; queueing writers here (fair, no sleeping) beats
        # SQLite's busy handler, which sleeps and retries. PostgreSQL needs no such thing.
        return self._sqlite_writer if self._sqlite_writer is not None else nullcontext()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        await self.engine.dispose()


def before_commit(session: AsyncSession, hook: Callable[[AsyncSession], Awaitable[None]]) -> None:
    """Await `hook(session)` as the last step of the unit of work, before it commits."""
    hooks: list[Callable[[AsyncSession], Awaitable[None]]] = session.info.setdefault(
        BEFORE_COMMIT, []
    )
    if hook not in hooks:
        hooks.append(hook)


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
                    if (driver := flushing.info.get(_PG_DRIVER)) is not None:
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


_SQLITE_DRIVER = "handoff.sqlite_driver"


async def sqlite_driver(session: AsyncSession) -> SqliteDriver | None:
    """The session's `SqliteDriver`; None unless it is SQLite run inline (another dialect,
    or SQLite through another driver)."""
    if _SQLITE_DRIVER not in session.info:
        conn = await session.connection()
        handle = sqlite3_connection((await conn.get_raw_connection()).driver_connection)
        session.info[_SQLITE_DRIVER] = SqliteDriver(handle) if handle is not None else None
    found: SqliteDriver | None = session.info[_SQLITE_DRIVER]
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


_PG_DRIVER = "handoff.pg_driver"


async def pg_driver(session: AsyncSession) -> PgDriver:
    """The session's `PgDriver` (PostgreSQL only; found once per unit of work)."""
    found: PgDriver | None = session.info.get(_PG_DRIVER)
    if found is None:
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        found = session.info[_PG_DRIVER] = PgDriver(conn, raw.dbapi_connection)
    return found


def after_commit(session: AsyncSession, hook: Callable[[], None]) -> None:
    """Run `hook` once the session's transaction has committed (not on rollback)."""
    hooks: list[Callable[[], None]] = session.info.setdefault(AFTER_COMMIT, [])
    if hook not in hooks:
        hooks.append(hook)


def _create_engine(url: str, *, echo: bool) -> AsyncEngine:
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo, "json_serializer": _json_dumps}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ":memory:"
        if database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, async_creator=inline_connector(database), **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    # No pre-ping: it cost a round trip per transaction. A connection the server dropped
    # fails its statement instead; SQLAlchemy then discards every pooled connection made
    # before, so only the work in flight fails (callers retry: relay, consumer, client).
    kwargs.update(pool_size=10, max_overflow=10, pool_recycle=1800)
    return without_jit(create_async_engine(url, **kwargs))


def without_jit(engine: AsyncEngine) -> AsyncEngine:
    """Each new connection of `engine`, if it is PostgreSQL's, turns JIT compilation off.

    PostgreSQL compiles a statement whose estimated cost passes `jit_above_cost`, with
    inlining and optimization past 500,000. Our statements are short, and an estimate is
    not: after an autoanalyze, an import batch's look-up of 2,000 leads was estimated at
    ~536,000 (the external ids per lead overestimated 35 times) and spent ~150 ms compiling
    on every run, for ~10 ms of work (the import fell from ~23,000 to ~9,000 rows/s, now
    and then). A `SET` when the connection is made, not a startup parameter: a pooler such
    as PgBouncer refuses startup parameters it does not know."""
    if engine.dialect.name == "postgresql":
        event.listen(engine.sync_engine, "connect", _no_jit)
    return engine


def _no_jit(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.run_async(lambda conn: conn.execute("SET jit = off"))


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


SQLITE_CACHE_KIB = 16 * 1024


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy own transaction boundaries (pysqlite's implicit BEGIN is wrong for us).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # WalCheckpointer does it off the loop
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    # 16 MiB of page cache per connection instead of SQLite's 2 MB: the indexes of a
    # table of a few hundred thousand leads stay in memory (an import of 150,000 rows ran
    # ~4% faster; a memory map instead made no difference).
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # A unit of work takes the write lock up front (no deadlock-prone read->write upgrade
    # between two writers); a read-only connection must not, or it would queue behind writers.
    immediate = conn.get_execution_options().get(WRITE_INTENT, False)
    sql = "BEGIN IMMEDIATE" if immediate else "BEGIN"
    handle = sqlite3_connection(conn.connection.driver_connection)
    if handle is None:  # (SQLite through another driver)
        conn.exec_driver_sql(sql)
        return
    # On the `sqlite3` connection itself: through `exec_driver_sql` (an execution context
    # and a cursor result for a statement that returns nothing) it cost a sixth of a unit
    # of work, ~35 µs of ~210. Its errors are SQLAlchemy's classes ("database is locked":
    # OperationalError), without SQLAlchemy's error events and disconnect check, which
    # matter for network drivers (an inline connection is only closed by its pool).
    try:
        handle.execute(sql)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, (), exc, sqlite3.Error, dialect=conn.dialect) from exc

"""Database access: one async engine per service, units of work with after-commit hooks."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.db_drivers import PG_DRIVER, SQLITE_DRIVER
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
                        if (driver := session.info.get(PG_DRIVER)) is not None:
                            await driver.write_deferred()
                finally:
                    # the drivers belong to this transaction's connection, not the session
                    session.info.pop(PG_DRIVER, None)
                    session.info.pop(SQLITE_DRIVER, None)
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

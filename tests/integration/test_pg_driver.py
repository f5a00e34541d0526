"""Plain SQL on the asyncpg connection under a unit of work (`shared.db_drivers.PgDriver`) is part
of that unit of work: begun with it, committed or rolled back with it, errors as
SQLAlchemy's. (It reaches into SQLAlchemy's asyncpg adapter; these tests are what would
notice if the adapter changed.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import JSON, Column, ForeignKey, Integer, String, Table, event, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

import shared.bulk_writes
import shared.db
import shared.db_drivers
from shared.bulk_writes import insert_many
from shared.db import Database, new_metadata
from shared.db_drivers import PgWrite, pg_driver
from shared.pg_lists import NULL, SEPARATOR
from tests.conftest import database_with

pytestmark = pytest.mark.integration

metadata = new_metadata()
notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("text", String(50), nullable=False),
)
parents = Table("parents", metadata, Column("id", Integer, primary_key=True, autoincrement=False))
children = Table(
    "children",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("parent_id", Integer, ForeignKey("parents.id"), nullable=False),
    Column("label", String(20), nullable=False, default=lambda: "made here"),  # (Python's)
)
profiles = Table(
    "profiles",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("email", String(254)),
    Column("profile", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
)
INSERT = "INSERT INTO notes (id, text) VALUES ($1, $2) RETURNING id"


@pytest.fixture
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with database_with(metadata, "postgres", request, tmp_path) as database:
        yield database


async def count(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(notes))).scalar_one())


class Boom(Exception):
    pass


async def test_a_first_statement_on_the_driver_rolls_back_with_the_unit_of_work(
    db: Database,
) -> None:
    with pytest.raises(Boom):
        async with db.transaction() as session:
            driver = await pg_driver(session)
            assert await driver.fetch(INSERT, 1, "first") == [(1,)]
            raise Boom
    assert await count(db) == 0


async def test_driver_and_session_statements_share_one_transaction(db: Database) -> None:
    async with db.transaction() as session:
        await (await pg_driver(session)).fetch(INSERT, 1, "by the driver")
        seen = (await session.execute(select(notes.c.text))).scalars().all()
        assert seen == ["by the driver"]
        await session.execute(notes.insert().values(id=2, text="by the session"))
        driver = await pg_driver(session)
        assert [tuple(r) for r in await driver.fetch("SELECT id FROM notes ORDER BY id")] == [
            (1,),
            (2,),
        ]
        await driver.executemany("INSERT INTO notes (id, text) VALUES ($1, $2)", [(3, "x")])
    assert await count(db) == 3
    with pytest.raises(Boom):
        async with db.transaction() as session:
            await session.execute(notes.insert().values(id=4, text="session first"))
            await (await pg_driver(session)).fetch(INSERT, 5, "then the driver")
            raise Boom
    assert await count(db) == 3


async def test_a_constraint_violation_is_sqlalchemys_integrity_error(db: Database) -> None:
    async with db.transaction() as session:
        await (await pg_driver(session)).fetch(INSERT, 1, "one")
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await (await pg_driver(session)).fetch(INSERT, 1, "the same id")
    attempts = 0

    async def insert_once_taken(session: object) -> None:  # a lost uniqueness race
        nonlocal attempts
        attempts += 1
        driver = await pg_driver(session)  # type: ignore[arg-type]
        await driver.fetch(INSERT, 1 if attempts == 1 else 2, "retried")

    await db.run(insert_once_taken)  # Database.run retries on IntegrityError
    assert attempts == 2 and await count(db) == 2


@pytest.mark.parametrize("lone", [False, True], ids=["statement", "lone-deferred-write"])
async def test_after_the_server_drops_the_connections_the_next_unit_of_work_succeeds(
    db: Database, postgres_admin_url: str, lone: bool
) -> None:
    """Only the work in flight fails: the pool must not hand out a dead connection again,
    not the one that failed nor the others the server ended with it (a restart); also when
    the work in flight is a lone deferred write (sent without BEGIN)."""
    backends = []
    entered = asyncio.Event()

    async def hold() -> None:  # two units of work at once: two pooled connections
        async with db.transaction() as session:
            driver = await pg_driver(session)
            backends.append((await driver.fetch("SELECT pg_backend_pid()"))[0][0])
            if len(backends) == 2:
                entered.set()
            await entered.wait()

    await asyncio.gather(hold(), hold())
    admin = await asyncpg.connect(postgres_admin_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        for backend in backends:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", backend)
    finally:
        await admin.close()
    with pytest.raises(DBAPIError):
        async with db.transaction() as session:
            driver = await pg_driver(session)
            if lone:
                driver.write_at_commit(PgWrite(NOTES, ([1], ["on a dead connection"])))
            else:
                await driver.fetch(INSERT, 1, "on a dead connection")
    for n in (2, 3):  # sequential units of work: each takes a connection from the pool
        async with db.transaction() as session:
            await (await pg_driver(session)).fetch(INSERT, n, "on a fresh one")
    assert await count(db) == 2


# Text lists travel packed into one text each (`shared.pg_lists`) unless they cannot.
ROUND_TRIP = (
    "SELECT 0, v, n FROM unnest($1::varchar[]) WITH ORDINALITY AS k(v, n) "
    "UNION ALL SELECT 1, NULL, count(*) FROM unnest($2::text[]) ORDER BY 1, 3"
)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements `PgDriver` sends, as sent."""
    statements: list[str] = []
    pack = shared.db_drivers.packed

    def recording(sql: str, args: Sequence[Any]) -> tuple[str, Sequence[Any]]:
        statement, packed_args = pack(sql, args)
        statements.append(statement)
        return statement, packed_args

    monkeypatch.setattr(shared.db_drivers, "packed", recording)
    return statements


@pytest.mark.parametrize(
    ("values", "travels_packed"),
    [
        (["ann@acme.com", "", None, "é☃", '{"a": "b\\u001f"}', " x "], True),
        ([], True),
        ([None, None], True),
        ([""], False),  # one empty text: the split would give no element
        (["a", f"b{SEPARATOR}c"], False),
        ([f"{NULL}", None], False),
    ],
)
async def test_text_lists_arrive_as_sent_packed_or_not(
    db: Database, sent: list[str], values: list[str | None], travels_packed: bool
) -> None:
    async with db.transaction() as session:
        rows = await (await pg_driver(session)).fetch(ROUND_TRIP, values, ["x", "y"])
    *listed, (_, _, counted) = [tuple(row) for row in rows]
    assert [value for _, value, _ in listed] == values
    assert counted == 2
    assert ("string_to_array" in sent[0]) is travels_packed


async def test_one_list_that_cannot_be_packed_sends_every_list_as_an_array(
    db: Database, sent: list[str]
) -> None:
    async with db.transaction() as session:
        rows = await (await pg_driver(session)).fetch(ROUND_TRIP, ["a", None], [""])
    assert [tuple(row)[1:] for row in rows] == [("a", 1), (None, 2), (None, 1)]
    assert sent == [ROUND_TRIP]


async def test_an_error_names_the_statement_as_written(db: Database) -> None:
    sql = "SELECT unnest($1::varchar(2)[])::int"
    with pytest.raises(DBAPIError) as failed:
        async with db.transaction() as session:
            await (await pg_driver(session)).fetch(sql, ["1", "no"])
    assert failed.value.statement == sql and failed.value.params == (["1", "no"],)


async def test_rows_inserted_through_packed_lists_read_back_unchanged(
    db: Database, sent: list[str]
) -> None:
    rows = [
        (1, "ann@acme.com", {"first_name": "Ann", "note": 'tab\there, quote " here'}),
        (2, None, {}),
        (3, "bo@acme.com", {"nested": {"list": [1, "two", None]}, "empty": ""}),
    ]
    async with db.transaction() as session:
        await insert_many(session, profiles, ("id", "email", "profile"), rows)
    async with db.engine.connect() as conn:
        stored = (await conn.execute(select(profiles).order_by(profiles.c.id))).all()
    assert [tuple(row) for row in stored] == rows
    assert sent[-1].count("string_to_array") == 2  # the emails and the profiles


# Writes deferred to the commit (`PgDriver.write_at_commit`) go in one statement.
NOTES = "INSERT INTO notes (id, text) SELECT * FROM unnest($1::int[], $2::varchar[])"
# numbered as the outbox's flush is: the WITH part takes the later parameters
COUNTED = PgWrite(
    "INSERT INTO profiles (id, email, profile) "
    "SELECT n.id, $2, jsonb_build_object('notes', c.total) FROM unnest($1::int[]) AS n(id), "
    "profiles_counted c",
    ([10], "ann@acme.com", ["x", "y", "z"]),
    ctes=("profiles_counted AS (SELECT count(*) AS total FROM unnest($3::text[]))",),
)


async def test_writes_at_commit_go_in_one_statement_as_it_commits(
    db: Database, sent: list[str]
) -> None:
    async with db.transaction() as session:
        driver = await pg_driver(session)
        driver.write_at_commit(PgWrite(NOTES, ([1, 2], ["one", "two"])))
        driver.write_at_commit(COUNTED)
        driver.write_at_commit(PgWrite(NOTES, ([3], ["three"])))
        assert await driver.fetch("SELECT count(*) FROM notes") == [(0,)]  # not yet
        before = len(sent)
    assert len(sent) == before + 1  # all three, in one statement
    async with db.engine.connect() as conn:
        written = (await conn.execute(select(notes.c.id, notes.c.text).order_by("id"))).all()
        profile = (await conn.execute(select(profiles.c.email, profiles.c.profile))).one()
    assert [tuple(row) for row in written] == [(1, "one"), (2, "two"), (3, "three")]
    assert tuple(profile) == ("ann@acme.com", {"notes": 3})


@pytest.fixture
def logged(db: Database) -> Iterator[list[str]]:
    """Every query the database's connections send, BEGIN and COMMIT included."""
    queries: list[str] = []

    def log(query: Any) -> None:
        queries.append(query.query)

    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(log)  # (a set: added once)

    event.listen(db.engine.sync_engine, "checkout", on_checkout)
    yield queries
    event.remove(db.engine.sync_engine, "checkout", on_checkout)


async def ours(queries: list[str]) -> list[str]:
    """What the unit of work sent (not asyncpg's look-ups of types), each as its first
    word, or `notes` for a statement writing that table."""
    for _ in range(3):  # asyncpg calls its query loggers soon, not at once
        await asyncio.sleep(0)
    kinds = []
    for query in queries:
        if "INSERT INTO notes" in query:
            kinds.append("notes")
        elif (word := query.split(maxsplit=1)[0].upper().rstrip(";")) in ("BEGIN", "COMMIT"):
            kinds.append(word)
    return kinds


async def test_a_unit_of_work_of_deferred_writes_alone_is_one_statement(
    db: Database, logged: list[str]
) -> None:
    """Nothing sent before them: the writes are the whole unit of work, one statement
    without BEGIN and COMMIT (a lone statement is atomic)."""
    async with db.transaction() as session:
        driver = await pg_driver(session)
        driver.write_at_commit(PgWrite(NOTES, ([1, 2], ["one", "two"])))
        driver.write_at_commit(COUNTED)
    assert await ours(logged) == ["notes"]
    assert await count(db) == 2
    logged.clear()  # (the count's own BEGIN)
    with pytest.raises(IntegrityError):  # its second part fails: nothing of it is kept
        async with db.transaction() as session:
            driver = await pg_driver(session)
            driver.write_at_commit(PgWrite(NOTES, ([3], ["three"])))
            driver.write_at_commit(PgWrite(NOTES, ([1], ["one again"])))
    assert await ours(logged) == ["notes"]
    assert await count(db) == 2
    logged.clear()
    async with db.transaction() as session:  # the pooled connection is in no transaction
        driver = await pg_driver(session)
        assert await driver.fetch("SELECT count(*) FROM notes") == [(2,)]
        driver.write_at_commit(PgWrite(NOTES, ([4], ["four"])))
    assert await ours(logged) == ["BEGIN", "notes", "COMMIT"]


async def test_deferred_writes_follow_every_before_commit_hook(
    db: Database, logged: list[str]
) -> None:
    """A hook that stages more (as the outbox's flush does) joins the one last statement,
    and a statement sent earlier keeps the unit of work a transaction."""

    async def stage_more(session: AsyncSession) -> None:
        (await pg_driver(session)).write_at_commit(PgWrite(NOTES, ([2], ["two"])))

    async with db.transaction() as session:
        driver = await pg_driver(session)
        assert await driver.fetch("SELECT count(*) FROM notes") == [(0,)]
        driver.write_at_commit(PgWrite(NOTES, ([1], ["one"])))
        shared.db.before_commit(session, stage_more)
    assert await ours(logged) == ["BEGIN", "notes", "COMMIT"]
    assert await count(db) == 2


async def test_a_staged_row_sent_at_once_follows_the_rows_staged_before_it(db: Database) -> None:
    """A staged row leaving out a column with a Python default goes through SQLAlchemy's
    INSERT when its table's rows are flushed; rows deferred before it are sent first (here
    the parent its foreign key needs)."""
    async with db.transaction() as session:
        shared.bulk_writes.stage_insert(session, parents, {"id": 1})
        shared.bulk_writes.stage_insert(session, children, {"id": 1, "parent_id": 1})
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(children.c.parent_id, children.c.label))).all()
    assert [tuple(row) for row in rows] == [(1, "made here")]


async def test_writes_at_commit_are_undone_with_a_unit_of_work_that_fails(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            driver = await pg_driver(session)
            driver.write_at_commit(PgWrite(NOTES, ([1], ["one"])))
            driver.write_at_commit(PgWrite(NOTES, ([1], ["one again"])))
    assert await count(db) == 0


async def test_writes_that_do_not_fit_their_statements_are_refused(db: Database) -> None:
    async with db.transaction() as session:
        driver = await pg_driver(session)
        with pytest.raises(ValueError, match="2 parameters, 1 values"):
            await driver.write([PgWrite(NOTES, ([1],))])
        with pytest.raises(ValueError, match="of one name"):
            await driver.write([COUNTED, COUNTED])
    assert await count(db) == 0


async def test_statements_are_never_jit_compiled(db: Database) -> None:
    """PostgreSQL would compile a statement estimated past `jit_above_cost` (a look-up of
    thousands of leads, misestimated, took ~150 ms compiling for ~10 ms of work)."""
    costly = "EXPLAIN SELECT sum(x) FROM generate_series(1, 10000000) AS x"  # ~125,000
    async with db.transaction() as session:
        plan = [row[0] for row in await (await pg_driver(session)).fetch(costly)]
        setting = (await session.execute(text("SHOW jit"))).scalar_one()

    assert setting == "off"
    assert plan[0].startswith("Aggregate") and not any("JIT" in line for line in plan)

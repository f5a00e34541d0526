"""`insert_many` (and `stage_insert`, which uses it) writes what SQLAlchemy's executemany
INSERT writes, on both databases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, Column, DateTime, Integer, LargeBinary, String, Table, select
from sqlalchemy.exc import IntegrityError

from shared.bulk_writes import insert_many, stage_insert
from shared.db import Database, new_metadata
from tests.conftest import database_with

metadata = new_metadata()
things = Table(
    "things",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("n", Integer),
    Column("doc", JSON, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("blob", LargeBinary),
)
tagged = Table(  # a client-side default: only SQLAlchemy's own INSERT applies it
    "tagged",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("tag", String(20), nullable=False, default="staged"),
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with database_with(metadata, request.param, request, tmp_path) as database:
        yield database


def rows(count: int) -> list[dict[str, Any]]:
    at = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
    return [
        {
            "id": str(uuid.uuid4()),
            "n": n if n % 3 else None,
            "doc": {"name": f"é{n}", "tags": ["a", n], "nested": {"ok": n % 2 == 0}},
            "at": at if n % 2 else datetime(2026, 1, n + 1, tzinfo=UTC),
            "blob": bytes([n]) * n,
        }
        for n in range(7)
    ][:count]


async def stored(db: Database, ids: list[str]) -> list[tuple[Any, ...]]:
    async with db.engine.connect() as conn:
        result = await conn.execute(
            select(things.c.n, things.c.doc, things.c.at, things.c.blob)
            .where(things.c.id.in_(ids))
            .order_by(things.c.id)
        )
        return [tuple(row) for row in result]


async def test_rows_in_any_column_order_read_back_as_sqlalchemy_wrote_them(db: Database) -> None:
    ours, theirs = rows(7), rows(7)
    for row in theirs:
        row["id"] = str(uuid.uuid4())
    by_id = {r["id"]: r for r in ours}
    columns = ("blob", "at", "id", "doc", "n")  # not the table's order
    async with db.transaction() as session:
        await insert_many(session, things, columns, [[r[c] for c in columns] for r in ours])
        await session.execute(things.insert(), theirs)

    mine = await stored(db, sorted(by_id))
    reference = await stored(db, sorted(r["id"] for r in theirs))
    assert len(mine) == 7
    # same values as SQLAlchemy stores for the same input, row for row
    expected = [by_id[i] for i in sorted(by_id)]
    assert [(r[0], r[1], bytes(r[3])) for r in mine] == [
        (e["n"], e["doc"], e["blob"]) for e in expected
    ]
    assert sorted(map(repr, (r[2] for r in mine))) == sorted(map(repr, (r[2] for r in reference)))


async def test_a_conflicting_row_fails_the_statement_and_nothing_is_written(db: Database) -> None:
    first, second = rows(2)
    second["id"] = first["id"]
    columns = ("id", "n", "doc", "at", "blob")
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await insert_many(session, things, columns, [[r[c] for c in columns] for r in rows(0)])
            await insert_many(
                session, things, columns, [[r[c] for c in columns] for r in (first, second)]
            )
    assert await stored(db, [first["id"]]) == []


async def test_skipping_conflicts_keeps_the_first_row_and_writes_the_others(db: Database) -> None:
    first, second, third = rows(3)
    again = {**first, "n": 99}  # the same key as a stored row, other values
    columns = ("id", "n", "doc", "at", "blob")
    async with db.transaction() as session:
        await insert_many(session, things, columns, [[first[c] for c in columns]])
    async with db.transaction() as session:
        await insert_many(
            session,
            things,
            columns,
            [[r[c] for c in columns] for r in (again, second, third)],
            skip_conflicts=True,
        )

    kept = await stored(db, [first["id"]])
    assert [row[0] for row in kept] == [first["n"]]
    assert len(await stored(db, [second["id"], third["id"]])) == 2


async def test_staged_rows_are_written_as_the_unit_of_work_commits(db: Database) -> None:
    same_shape = rows(5)
    full_shape = rows(6)[5]
    other_shape = {k: v for k, v in rows(7)[6].items() if k != "blob"}
    async with db.transaction() as session:
        for row in same_shape:
            stage_insert(session, things, row)
        assert await stored(db, [r["id"] for r in same_shape]) == []  # not before the commit
    async with db.transaction() as session:  # rows of two shapes in one unit of work
        stage_insert(session, things, full_shape)
        stage_insert(session, things, other_shape)
    async with db.transaction() as session:  # a column left to its client-side default
        stage_insert(session, tagged, {"id": "a"})
        stage_insert(session, tagged, {"id": "b", "tag": "given"})

    written = await stored(db, [r["id"] for r in same_shape])
    by_id = {r["id"]: r for r in same_shape}
    expected = [by_id[i] for i in sorted(by_id)]
    assert [(r[0], r[1], bytes(r[3])) for r in written] == [
        (e["n"], e["doc"], e["blob"]) for e in expected
    ]
    two = sorted((full_shape, other_shape), key=lambda r: r["id"])
    assert [(r[0], r[3]) for r in await stored(db, [r["id"] for r in two])] == [
        (r["n"], r.get("blob")) for r in two
    ]
    async with db.engine.connect() as conn:
        tags = dict((await conn.execute(select(tagged.c.id, tagged.c.tag))).all())
    assert tags == {"a": "staged", "b": "given"}


async def test_a_failing_staged_insert_rolls_the_unit_of_work_back(db: Database) -> None:
    earlier, first, second = rows(3)
    second["id"] = first["id"]
    columns = tuple(earlier)
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            await insert_many(session, things, columns, [tuple(earlier.values())])
            stage_insert(session, things, first)
            stage_insert(session, things, second)
    assert await stored(db, [earlier["id"], first["id"]]) == []

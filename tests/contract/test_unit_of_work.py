"""`Database.transaction`, the unit of work: it commits or rolls back, runs its after-commit
hooks only once committed, and always hands its connection back to the pool, whether the
work succeeded, failed or was cancelled. On SQLite and PostgreSQL (real)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, Table, func, insert, select

from shared.db import Database, after_commit, new_metadata
from tests.conftest import database_with

metadata = new_metadata()
marks = Table("marks", metadata, Column("n", Integer, primary_key=True, autoincrement=False))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with database_with(metadata, request.param, request, tmp_path) as database:
        yield database


def checked_out(db: Database) -> int:
    return int(db.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


async def stored(db: Database) -> list[int]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(marks.c.n).order_by(marks.c.n))).scalars())


async def test_connections_go_back_to_the_pool_after_commit_failure_and_cancel(
    db: Database,
) -> None:
    hooks: list[int] = []

    reached = asyncio.Event()

    async def write(n: int, *, fail: bool = False, block: asyncio.Event | None = None) -> None:
        async with db.transaction() as session:
            await session.execute(insert(marks).values(n=n))
            after_commit(session, lambda: hooks.append(n))
            if block is not None:
                reached.set()
                await block.wait()
            if fail:
                raise RuntimeError("the work failed")

    await write(1)
    assert checked_out(db) == 0
    with pytest.raises(RuntimeError):
        await write(2, fail=True)
    assert checked_out(db) == 0
    forever = asyncio.Event()
    task = asyncio.create_task(write(3, block=forever))
    await reached.wait()  # it holds its connection, its row written, not committed
    assert checked_out(db) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert checked_out(db) == 0
    await write(4)
    assert (await stored(db), hooks, checked_out(db)) == ([1, 4], [1, 4], 0)


async def test_units_of_work_in_turn_reuse_one_connection(db: Database) -> None:
    for n in range(20):
        async with db.transaction() as session:
            await session.execute(insert(marks).values(n=n))
    async with db.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(marks))).scalar_one()
    assert (count, db.engine.sync_engine.pool.checkedin()) == (20, 1)  # type: ignore[attr-defined]

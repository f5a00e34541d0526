"""Embedded-mode SQLite: staged inserts land with the commit; checkpoints run off the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shared.bulk_writes import stage_insert
from shared.bus.local import LocalBus
from shared.bus.port import OutgoingMessage
from shared.db import SQLITE_CACHE_KIB, Database, before_commit
from shared.sqlite_checkpoint import WalCheckpointer
from tests.support import count_effects, create_schema, effects


async def test_staged_rows_are_inserted_with_the_commit_and_not_on_rollback(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    await create_schema(db)
    lead = str(uuid.uuid4())
    async with db.transaction() as session:
        for n in range(3):
            stage_insert(session, effects, {"event_id": "e", "lead_id": lead, "n": n})
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            stage_insert(session, effects, {"event_id": "e", "lead_id": lead, "n": 9})
            raise RuntimeError("the unit of work failed")
    assert await count_effects(db, lead_id=lead) == 3
    await db.dispose()


def rows_in_main_file(path: Path) -> int:
    """Rows visible in the database file itself, ignoring the write-ahead log."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])
    except sqlite3.OperationalError:  # the table itself is still only in the WAL
        return 0
    finally:
        conn.close()


async def test_the_checkpointer_moves_the_wal_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (n INTEGER)")
    writer.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(500)])
    assert rows_in_main_file(path) == 0

    checkpointer = WalCheckpointer(str(path), interval=0.05)
    checkpointer.start()
    await asyncio.sleep(0.3)
    checkpointer.stop()
    moved = rows_in_main_file(path)  # before closing: the last close would checkpoint too
    writer.close()

    assert moved == 500


async def test_a_before_commit_hook_may_stage_more_rows(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    await create_schema(db)

    async def stage_from_a_hook(session: object) -> None:
        stage_insert(session, effects, {"event_id": "late", "lead_id": "x", "n": 2})  # type: ignore[arg-type]

    async with db.transaction() as session:
        stage_insert(session, effects, {"event_id": "early", "lead_id": "x", "n": 1})
        before_commit(session, stage_from_a_hook)
    assert await count_effects(db, lead_id="x") == 2
    await db.dispose()


LIMIT = 256 * 1024  # bytes of WAL before a restart is due
BOUND = 4 * 1024 * 1024  # what the WAL may reach meanwhile; without restarts it passes 10 MB


def tight(checkpointer: WalCheckpointer | None) -> WalCheckpointer:
    assert checkpointer is not None
    running = checkpointer.running
    checkpointer.stop()  # a running thread waits out its old interval first
    checkpointer.interval, checkpointer.max_wal_bytes = 0.02, LIMIT
    if running:
        checkpointer.start()
    return checkpointer


async def test_a_databases_wal_starts_again_once_it_outgrows_its_limit(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    await create_schema(db)
    checkpointer = tight(db._checkpointer)  # steady writes, back to back: ~15 MB of WAL
    largest = 0
    for k in range(1500):
        async with db.transaction() as session:
            for n in range(20):
                stage_insert(session, effects, {"event_id": "e" * 36, "lead_id": f"{k}", "n": n})
        largest = max(largest, checkpointer.wal_bytes())
    assert await count_effects(db) == 30_000
    await db.dispose()

    assert 0 < largest < BOUND


async def test_the_local_logs_wal_starts_again_once_it_outgrows_its_limit(tmp_path: Path) -> None:
    bus = LocalBus(tmp_path / "events.db", partitions=2)
    await bus.start()
    checkpointer = tight(bus._checkpointer)
    largest = 0
    try:
        for k in range(1500):
            await bus.publish(
                [
                    OutgoingMessage("t", f"lead-{n}", b"x" * 400, [("n", b"%d" % k)])
                    for n in range(20)
                ]
            )
            largest = max(largest, checkpointer.wal_bytes())
            await asyncio.sleep(0.001)  # a fast producer, not a flood of ~30 MB a second
    finally:
        await bus.close()

    assert 0 < largest < BOUND


async def test_a_service_connection_has_the_embedded_settings(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'settings.db'}")
    try:
        async with db.transaction() as session:
            conn = await session.connection()
            settings = {
                name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
                for name in ("journal_mode", "synchronous", "cache_size", "foreign_keys")
            }
    finally:
        await db.dispose()
    # WAL, commits not fsynced one by one (NORMAL = 1), a 16 MiB page cache (in KiB, negative)
    assert settings == {
        "journal_mode": "wal",
        "synchronous": 1,
        "cache_size": -SQLITE_CACHE_KIB,
        "foreign_keys": 1,
    }


def other_writer_is_locked_out(path: Path) -> bool:
    """Whether another connection is refused SQLite's write lock at once."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    else:
        other.execute("ROLLBACK")
        return False
    finally:
        other.close()


async def test_a_unit_of_work_holds_the_write_lock_from_its_start(tmp_path: Path) -> None:
    """`BEGIN IMMEDIATE` for units of work (before any statement); plain reads stay
    deferred and never keep a writer out."""
    path = tmp_path / "lock.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.transaction() as session:
            await session.connection()  # the transaction has begun; nothing written yet
            during_unit_of_work = other_writer_is_locked_out(path)
        async with db.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
            during_read = other_writer_is_locked_out(path)
    finally:
        await db.dispose()
    assert (during_unit_of_work, during_read) == (True, False)


async def test_a_unit_of_work_that_cannot_begin_raises_sqlalchemys_error(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        async with db.engine.connect() as conn:  # the pool's one connection: wait 50 ms, not 5 s
            await conn.exec_driver_sql("PRAGMA busy_timeout=50")
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"):
            async with db.transaction() as session:
                await session.connection()
        pool = db.engine.sync_engine.pool
        assert (pool.checkedout(), pool.checkedin()) == (0, 1)  # type: ignore[attr-defined]
        holder.execute("ROLLBACK")
        async with db.transaction() as session:  # the connection is usable afterwards
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        holder.close()
        await db.dispose()


async def test_each_unit_of_work_gives_other_tasks_one_turn(tmp_path: Path) -> None:
    """Embedded SQLite runs inline, so nothing in a unit of work suspends: it ends by giving
    the event loop one turn, so that units of work back to back (a relay draining a backlog)
    cannot keep other tasks from running, and no more than one (closing the session in a
    task of its own, as `async with session` does, cost three)."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}")
    await create_schema(db)
    turns, stop = 0, False

    async def ticker() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        before = turns
        for n in range(10):
            async with db.transaction() as session:
                stage_insert(session, effects, {"event_id": "e", "lead_id": "l", "n": n})
        during = turns - before
    finally:
        stop = True
        await task
        await db.dispose()
    assert during == 10

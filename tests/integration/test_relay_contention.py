"""Several relays on one PostgreSQL database: one publishes at a time, and the others do not
fall asleep behind it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select

from shared.bus.local import LocalBus
from shared.db import Database
from shared.outbox import Outbox
from shared.outbox_relay import OutboxRelay, _advisory_lock_id
from tests.conftest import new_pg_database
from tests.support import Ping, catalog_with_ping, create_schema, eventually, outbox_tables

pytestmark = pytest.mark.integration


async def test_a_relay_that_found_another_publishing_tries_again_soon_then_less_often(
    postgres_admin_url: str, tmp_path: Path
) -> None:
    async with new_pg_database(postgres_admin_url) as url:
        db = Database(url)
        bus = LocalBus(tmp_path / "log.db")
        await bus.start()
        outbox = Outbox(service="busy", tables=outbox_tables, catalog=catalog_with_ping("t"))
        # No safety poll to save it: only a retry can publish its event in time.
        relay = OutboxRelay(db=db, outbox=outbox, bus=bus, idle_poll=60.0)
        tries = 0
        claim = relay.relay_once

        async def counted() -> int:
            nonlocal tries
            tries += 1
            return await claim()

        relay.relay_once = counted  # type: ignore[method-assign]
        other = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        running = None
        try:
            await create_schema(db)
            # another relay (in another process) is publishing: it holds the lock
            await other.execute("SELECT pg_advisory_lock($1)", _advisory_lock_id("busy"))
            running = asyncio.create_task(relay.run())
            async with db.transaction() as session:  # wakes our relay, which finds it busy
                await outbox.add(session, Ping(lead_id=uuid.uuid4(), n=1), subject="lead-1")
            await asyncio.sleep(1.0)
            assert await waiting(db) == 1
            # 50 ms, then twice as long each time: 0, 0.05, 0.15, 0.35, 0.75 s (not 20 tries)
            assert 3 <= tries <= 6, tries

            await other.execute("SELECT pg_advisory_unlock($1)", _advisory_lock_id("busy"))

            await eventually(lambda: nothing_waits(db), timeout=3.0)
        finally:
            relay.stop()
            if running is not None:
                await asyncio.wait_for(running, timeout=10)
            await other.close()
            await bus.close()
            await db.dispose()


async def waiting(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(outbox_tables[0]))).one()[0]
        )


async def nothing_waits(db: Database) -> bool:
    return await waiting(db) == 0

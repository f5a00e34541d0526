"""PostgreSQL plans that must not depend on when a table was last analyzed.

PostgreSQL caches a generic plan for a prepared statement after five executions, made with
what it knew of the tables then. On a fresh database (or a queue that is usually empty)
that plan is a sequential scan, and it stays one while the table grows: every lookup then
reads the whole table. These tests check the statements on hot paths on real PostgreSQL.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from shared.bus.local import LocalBus
from shared.db import Database
from shared.outbox import Outbox
from shared.outbox_relay import OutboxRelay
from tests.conftest import new_pg_database
from tests.support import Ping, catalog_with_ping, create_schema, outbox_tables

pytestmark = pytest.mark.integration


async def test_the_relay_plans_each_claim_afresh(postgres_admin_url: str, tmp_path: Path) -> None:
    """A claim planned once for an empty outbox would scan the whole backlog later."""
    async with new_pg_database(postgres_admin_url) as url:
        db = Database(url)
        bus = LocalBus(tmp_path / "log.db")
        await bus.start()
        try:
            await create_schema(db)
            outbox = Outbox(service="plans", tables=outbox_tables, catalog=catalog_with_ping("t"))
            relay = OutboxRelay(db=db, outbox=outbox, bus=bus, batch_size=50)
            lead = uuid.uuid4()
            published = 0
            for n in range(10):  # claims on an empty outbox, then on a small backlog
                if n >= 5:
                    async with db.transaction() as session:
                        for i in range(20):
                            await outbox.add(session, Ping(lead_id=lead, n=i), subject=str(lead))
                published += await relay.relay_once()
            assert published == 100
            # One claim at a time: every transaction above ran on the pool's one connection,
            # where the prepared claim statement keeps its counts of plans.
            async with db.engine.connect() as conn:
                plans = (
                    await conn.execute(
                        text(
                            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                            "WHERE statement LIKE 'DELETE FROM%outbox%'"
                        )
                    )
                ).all()
            assert plans == [(0, 10)]
        finally:
            await bus.close()
            await db.dispose()

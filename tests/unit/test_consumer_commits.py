"""Offsets are committed after their batch's transaction, one commit at a time and in
order, and the last one before the consumer returns."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

from shared.bus.port import Bus, OutgoingMessage, Record, RevokeHook, Subscription
from shared.consumer import ConsumerHooks, EventConsumer
from shared.db import Database
from shared.inbox import Inbox
from tests.support import (
    Ping,
    catalog_with_ping,
    create_schema,
    inbox_table,
    ping_records,
    record_effect,
)


class SlowCommits(Subscription):
    """Hands out prepared batches; each commit takes a while and is logged."""

    def __init__(self, batches: list[list[Record]], log: list[str], stop: asyncio.Event) -> None:
        self.batches = batches
        self.log = log
        self.stop = stop
        self.committing = 0

    async def start(self) -> None:
        pass

    async def poll(self, *, max_records: int, timeout: float) -> list[Record]:
        if not self.batches:
            self.stop.set()
            await asyncio.sleep(0)
            return []
        return self.batches.pop(0)

    async def commit(self, records: Sequence[Record]) -> None:
        self.committing += 1
        assert self.committing == 1, "two offset commits at once"
        self.log.append(f"commit {records[-1].offset} starts")
        await asyncio.sleep(0.02)
        self.log.append(f"commit {records[-1].offset} ends")
        self.committing -= 1

    async def lag(self) -> dict[tuple[str, int], int]:
        return {}

    def assignment(self) -> set[tuple[str, int]]:
        return set()

    async def close(self) -> None:
        self.log.append("closed")


class FakeBus(Bus):
    def __init__(self, subscription: SlowCommits) -> None:
        self.subscription = subscription

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        pass

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        raise AssertionError("nothing should be dead-lettered")

    def subscribe(
        self, *, group: str, topics: Sequence[str], on_revoke: RevokeHook | None = None
    ) -> Subscription:
        return self.subscription

    async def ping(self) -> None:
        pass


async def test_offsets_commit_after_their_transaction_in_order_and_before_returning(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    await create_schema(db)
    catalog = catalog_with_ping("t")
    records = ping_records(catalog, "t", uuid.uuid4(), 12)
    log: list[str] = []
    consumer: EventConsumer

    async def db_committed(batch: Sequence[Record]) -> None:
        log.append(f"db {batch[-1].offset}")

    stop = asyncio.Event()
    subscription = SlowCommits([records[0:4], records[4:8], records[8:12]], log, stop)
    consumer = EventConsumer(
        service="c",
        group="g",
        bus=FakeBus(subscription),
        db=db,
        inbox=Inbox(inbox_table),
        catalog=catalog,
        handlers={Ping: [record_effect]},
        hooks=ConsumerHooks(after_db_commit=db_committed),
    )
    task = asyncio.create_task(consumer.run())
    await stop.wait()
    consumer.stop()
    await asyncio.wait_for(task, timeout=10)
    await db.dispose()

    for offset in (3, 7, 11):
        assert log.index(f"db {offset}") < log.index(f"commit {offset} starts")
    assert log.index("commit 3 ends") < log.index("commit 7 starts")
    assert log.index("commit 7 ends") < log.index("commit 11 starts")
    assert log[-2:] == ["commit 11 ends", "closed"]

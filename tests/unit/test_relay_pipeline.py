"""A relay on a bus that enqueues claims several batches per transaction and commits the
claims only once the bus has stored every one of them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from sqlalchemy import func, select

from shared.bus.local import LocalBus
from shared.bus.port import Bus, BusError, OutgoingMessage, Subscription
from shared.db import Database
from shared.outbox import Outbox
from shared.outbox_relay import OutboxRelay, PipeliningBus
from tests.support import Ping, catalog_with_ping, create_schema, outbox_tables


class EnqueueingBus(Bus):
    """Records what was enqueued; the `fail_at`-th enqueued batch fails to be stored."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_at = fail_at
        self.unconfirmed = 0  # enqueued, storage not yet confirmed

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        pass

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await (await self.enqueue(messages))

    async def enqueue(
        self, messages: Sequence[OutgoingMessage], *, after: Awaitable[None] | None = None
    ) -> Awaitable[None]:
        self.batches.append([orjson.loads(m.value)["n"] for m in messages])
        failing = len(self.batches) == self.fail_at
        self.unconfirmed += 1

        async def stored() -> None:
            await asyncio.sleep(0.01)
            self.unconfirmed -= 1
            if failing:
                raise BusError("the broker refused the batch")

        return stored()

    def subscribe(self, **kwargs: object) -> Subscription:
        raise NotImplementedError


async def fill(db: Database, outbox: Outbox, count: int) -> None:
    lead = uuid.uuid4()
    async with db.transaction() as session:
        for n in range(count):
            await outbox.add(session, Ping(lead_id=lead, n=n), subject=str(lead))


async def outbox_rows(db: Database) -> int:
    async with db.engine.connect() as conn:
        query = select(func.count()).select_from(outbox_tables[0])
        return int((await conn.execute(query)).scalar_one())


async def test_batches_are_claimed_in_order_while_earlier_ones_are_stored(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    await create_schema(db)
    outbox = Outbox(service="p", tables=outbox_tables, catalog=catalog_with_ping("t"))
    bus = EnqueueingBus()
    assert isinstance(bus, PipeliningBus)
    relay = OutboxRelay(db=db, outbox=outbox, bus=bus, batch_size=3, pipeline=2)
    await fill(db, outbox, 8)

    assert await relay.relay_once() == 6  # two batches in one transaction
    assert bus.unconfirmed == 0  # both stored before the claims committed
    assert await relay.relay_once() == 2
    assert await relay.relay_once() == 0
    await db.dispose()
    assert bus.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]


async def test_a_batch_the_bus_fails_to_store_puts_every_claim_of_the_transaction_back(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    await create_schema(db)
    outbox = Outbox(service="p", tables=outbox_tables, catalog=catalog_with_ping("t"))
    bus = EnqueueingBus(fail_at=2)
    relay = OutboxRelay(db=db, outbox=outbox, bus=bus, batch_size=3, pipeline=3)
    await fill(db, outbox, 8)

    with pytest.raises(BusError):
        await relay.relay_once()
    assert bus.unconfirmed == 0
    assert await outbox_rows(db) == 8  # the first, stored batch goes out again too
    assert await relay.relay_once() == 8
    await db.dispose()
    assert bus.batches[-3:] == [[0, 1, 2], [3, 4, 5], [6, 7]]


class RecordingLocalBus(LocalBus):
    """The embedded log, noting the size of every publish."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.publishes: list[int] = []

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        await super().publish(messages)
        self.publishes.append(len(messages))


async def _until_published(bus: RecordingLocalBus, events: int, *, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while sum(bus.publishes) < events:
        assert asyncio.get_running_loop().time() < deadline, bus.publishes
        await asyncio.sleep(0.01)


@dataclass
class Relayed:
    db: Database
    outbox: Outbox
    bus: RecordingLocalBus


@contextlib.asynccontextmanager
async def relay_running(tmp_path: Path, *, linger: float) -> AsyncIterator[Relayed]:
    """A relay running with `linger` from an SQLite outbox to a recording local log; stopped
    (and its stop timed) on the way out."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    await create_schema(db)
    outbox = Outbox(service="p", tables=outbox_tables, catalog=catalog_with_ping("t"))
    bus = RecordingLocalBus(tmp_path / "log.db")
    await bus.start()
    relay = OutboxRelay(db=db, outbox=outbox, bus=bus, linger=linger)
    running = asyncio.create_task(relay.run())
    try:
        yield Relayed(db, outbox, bus)
        relay.stop()
        await asyncio.wait_for(running, timeout=0.5)  # a stop ends a linger
    finally:
        running.cancel()
        await bus.close()
        await db.dispose()


async def test_a_lingering_relay_sends_a_lone_event_at_once_and_the_next_ones_together(
    tmp_path: Path,
) -> None:
    async with relay_running(tmp_path, linger=1.0) as on:
        await fill(on.db, on.outbox, 1)
        await _until_published(on.bus, 1, within=0.8)  # not held back: the relay was idle
        for _ in range(3):  # three commits within the linger, apart enough to go apart
            await asyncio.sleep(0.05)
            await fill(on.db, on.outbox, 1)
        await _until_published(on.bus, 4, within=5)

    assert on.bus.publishes == [1, 3]


async def test_without_linger_each_commit_is_relayed_by_itself(tmp_path: Path) -> None:
    async with relay_running(tmp_path, linger=0) as on:
        for n in range(1, 4):
            await fill(on.db, on.outbox, 1)
            await _until_published(on.bus, n, within=5)

    assert on.bus.publishes == [1, 1, 1]

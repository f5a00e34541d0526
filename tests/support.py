"""Test doubles built from the real parts: a tiny service schema, a test event, collectors."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from sqlalchemy import Column, Integer, String, Table, func, insert, select

from shared.bus.port import Bus, OutgoingMessage, Record, Subscription
from shared.consumer import EventConsumer
from shared.db import Database, new_metadata
from shared.events.catalog import CATALOG, EventCatalog, EventType
from shared.events.codec import build_envelope, to_binary
from shared.events.payloads import Payload
from shared.handler_context import Handler, HandlerContext
from shared.inbox import Inbox, define_inbox_table
from shared.outbox_tables import define_outbox_tables

metadata = new_metadata()
outbox_tables = define_outbox_tables(metadata)
inbox_table = define_inbox_table(metadata)
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False),
    Column("lead_id", String(36), nullable=False),
    Column("n", Integer, nullable=False),
)


class Ping(Payload):
    """A test event: lead `lead_id`'s n-th ping."""

    n: int


def catalog_with_ping(topic: str) -> EventCatalog:
    return CATALOG.extended(EventType("handoff.test.ping.v1", Ping, topic, "A test event.", "test"))


def ping(catalog: EventCatalog, topic: str, lead_id: uuid.UUID, n: int) -> OutgoingMessage:
    """Lead `lead_id`'s n-th ping as it travels on the bus (sequence n + 1)."""
    envelope = build_envelope(
        catalog,
        Ping(lead_id=lead_id, n=n),
        source_service="test",
        subject=str(lead_id),
        sequence=n + 1,
    )
    key, headers, value = to_binary(envelope)
    return OutgoingMessage(topic=topic, key=key, value=value, headers=headers)


def ping_records(catalog: EventCatalog, topic: str, lead_id: uuid.UUID, count: int) -> list[Record]:
    """Lead `lead_id`'s first `count` pings as read from partition 0 (offset n = ping n)."""
    return [
        Record(m.topic, 0, n, m.key, m.value, tuple(m.headers))
        for n, m in enumerate(ping(catalog, topic, lead_id, n) for n in range(count))
    ]


async def record_effect(ctx: HandlerContext, payload: Ping) -> None:
    await ctx.session.execute(
        insert(effects).values(event_id=ctx.event_id, lead_id=str(payload.lead_id), n=payload.n)
    )


def ping_consumer(
    bus: Bus,
    db: Database,
    catalog: EventCatalog,
    *,
    group: str,
    handlers: Sequence[Handler] = (),
    service: str = "consumer",
    **options: Any,
) -> EventConsumer:
    """A consumer group member applying pings into `effects` (after `handlers`, if any),
    with the test schema's inbox; `options` go to `EventConsumer` as they are."""
    return EventConsumer(
        service=service,
        group=group,
        bus=bus,
        db=db,
        inbox=Inbox(inbox_table),
        catalog=catalog,
        handlers={Ping: [*handlers, record_effect]},
        **options,
    )


async def create_schema(db: Database, *, dispose: bool = False) -> None:
    async with db.engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    if dispose:  # the caller goes on in another event loop
        await db.dispose()


async def count_effects(db: Database, **where: Any) -> int:
    stmt = select(func.count()).select_from(effects)
    for column, value in where.items():
        stmt = stmt.where(effects.c[column] == value)
    async with db.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


async def effect_ns(db: Database) -> list[int]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(effects.c.n).order_by(effects.c.id))).scalars())


async def collect(
    subscription: Subscription, count: int, *, timeout: float = 30.0, commit: bool = True
) -> list[Record]:
    """Poll until `count` records arrived (or the timeout), committing as a consumer would."""
    records: list[Record] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(records) < count and asyncio.get_running_loop().time() < deadline:
        batch = await subscription.poll(max_records=500, timeout=0.5)
        records.extend(batch)
        if batch and commit:
            await subscription.commit(batch)
    return records


async def eventually(predicate: Any, *, timeout: float = 30.0, interval: float = 0.1) -> None:
    """Wait until an async predicate holds; fail with its last value otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    value = None
    while asyncio.get_running_loop().time() < deadline:
        value = await predicate()
        if value:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


def new_lead_ids(n: int) -> Sequence[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


@contextlib.asynccontextmanager
async def reading_from_start(servers: str, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer of `topic` from its first record, in a group of its own (it commits
    nothing): what a test reads back what was published with."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"check-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()

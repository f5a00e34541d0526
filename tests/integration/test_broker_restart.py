"""The Kafka broker restarts while a service writes events and another consumes them:
every event written before, during and after the outage is applied exactly once, each
lead's in order. The broker is a private one (deploy/local/kafka.sh with its own ports and
directory), so stopping it disturbs no other test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from shared.bus.kafka import KafkaBus
from shared.db import Database
from shared.outbox import Outbox
from shared.outbox_relay import OutboxRelay
from tests import infra
from tests.conftest import new_pg_database, unique
from tests.support import (
    Ping,
    catalog_with_ping,
    create_schema,
    effects,
    eventually,
    outbox_tables,
    ping_consumer,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LEADS = 4


@dataclass
class PrivateBroker:
    """A single-node broker of our own, started and stopped with deploy/local/kafka.sh."""

    state_dir: Path
    port: int
    controller_port: int

    @property
    def servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _script(self, command: str) -> None:
        env = {
            **os.environ,
            "HANDOFF_LOCAL_DIR": str(self.state_dir),
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
        }
        try:  # in a thread: the loop goes on relaying and consuming meanwhile
            await asyncio.to_thread(infra.run_local, "kafka.sh", command, env)
        except infra.InfrastructureMissing as exc:
            infra.unavailable("Kafka broker", str(exc))

    async def start(self) -> None:
        await self._script("start")

    async def stop(self) -> None:
        await self._script("stop")


@contextlib.asynccontextmanager
async def private_broker(tmp_path: Path) -> AsyncIterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "broker", infra.free_port(), infra.free_port())
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


class Writer:
    """Writes a transaction of one ping per lead every 20 ms, each lead's `n` counting up."""

    def __init__(self, db: Database, outbox: Outbox) -> None:
        self.db, self.outbox = db, outbox
        self.leads = [uuid.uuid4() for _ in range(LEADS)]
        self.written = 0
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self._stopping.is_set():
            async with self.db.transaction() as session:
                for lead in self.leads:
                    await self.outbox.add(session, Ping(lead_id=lead, n=n), subject=str(lead))
            self.written += LEADS
            n += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=0.02)

    def stop(self) -> None:
        self._stopping.set()


async def applied(db: Database) -> tuple[int, int]:
    """Effect rows, and distinct event ids among them."""
    query = select(func.count(), func.count(effects.c.event_id.distinct()))
    async with db.engine.connect() as conn:
        total, distinct = (await conn.execute(query)).one()
    return int(total), int(distinct)


async def ns_per_lead(db: Database) -> dict[str, list[int]]:
    query = select(effects.c.lead_id, effects.c.n).order_by(effects.c.id)
    out: dict[str, list[int]] = {}
    async with db.engine.connect() as conn:
        for lead, n in await conn.execute(query):
            out.setdefault(lead, []).append(n)
    return out


async def test_events_written_while_the_broker_restarts_are_applied_once_each_in_order(
    kafka_servers: str, postgres_admin_url: str, tmp_path: Path
) -> None:
    topic = unique("t.restart")
    catalog = catalog_with_ping(topic)
    async with (
        private_broker(tmp_path) as broker,
        new_pg_database(postgres_admin_url) as producer_url,
        new_pg_database(postgres_admin_url) as consumer_url,
    ):
        producer_db, consumer_db = Database(producer_url), Database(consumer_url)
        for db in (producer_db, consumer_db):
            await create_schema(db)
        # Two processes' worth of clients, as deployed: the writing service's, the reading one's.
        # Publishes give up after 3 s, so the relay's publishes fail during the outage
        # (the broker is down for 4 s and its start, several seconds more) and the relay
        # retries them.
        producing = KafkaBus(
            broker.servers, client_id=unique("writer"), partitions=2, request_timeout_ms=3000
        )
        consuming = KafkaBus(
            broker.servers, client_id=unique("reader"), partitions=2, session_timeout_ms=6000
        )
        await producing.start()
        await consuming.start()
        outbox = Outbox(service="writer", tables=outbox_tables, catalog=catalog)
        relay = OutboxRelay(db=producer_db, outbox=outbox, bus=producing, batch_size=50)
        consumer = ping_consumer(
            consuming, consumer_db, catalog, group=unique("g"), service="reader"
        )
        writer = Writer(producer_db, outbox)
        tasks = [asyncio.create_task(t.run()) for t in (relay, consumer, writer)]
        try:

            async def some_applied() -> bool:
                return (await applied(consumer_db))[0] >= 40

            await eventually(some_applied, timeout=60)
            await broker.stop()  # writes go on: they wait in the outbox
            before_restart = writer.written
            await asyncio.sleep(4)
            await broker.start()
            await asyncio.sleep(1)
            writer.stop()
            await tasks[2]
            assert writer.written > before_restart  # some were written while it was down

            async def all_applied() -> bool:
                return (await applied(consumer_db))[0] >= writer.written

            await eventually(all_applied, timeout=120)
        finally:
            relay.stop()
            consumer.stop()
            writer.stop()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)
            await producing.close()
            await consuming.close()

        total, distinct = await applied(consumer_db)
        per_lead = await ns_per_lead(consumer_db)
        for db in (producer_db, consumer_db):
            await db.dispose()

    # the outage outlasted a publish: the relay's producer failed and was replaced
    replaced = REGISTRY.get_sample_value(
        "handoff_kafka_producers_replaced_total", {"client_id": producing.client_id}
    )
    assert replaced is not None and replaced >= 1
    assert (total, distinct) == (writer.written, writer.written)
    assert len(per_lead) == LEADS
    written_per_lead = writer.written // LEADS
    assert all(ns == list(range(written_per_lead)) for ns in per_lead.values())

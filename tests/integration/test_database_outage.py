"""A service's database goes away for a few seconds while events keep coming (Kafka and
PostgreSQL real): the service's consumer is restarted, nothing is dead-lettered for the
outage, and every lead ends where it would have, each stage change announced once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy.engine import make_url

from services.qualification.app import definition
from shared.bus.kafka import KafkaBus
from shared.events.catalog import Topics, dead_letter_topic
from tests.conftest import admin_execute, new_pg_database
from tests.integration.served_qualification import (
    becoming_an_mql,
    publish,
    served_qualification,
)
from tests.support import reading_from_start

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LEADS = 8


async def publish_mql_leads(bus: KafkaBus, leads: list[uuid.UUID]) -> None:
    for lead in leads:
        for payload in becoming_an_mql(lead):
            await publish(bus, payload)


async def records_of(
    servers: str, topic: str, leads: set[str], *, until: int, settle_s: float = 2.0
) -> list[tuple[str, dict[str, object]]]:
    """(lead, value) of the records about `leads` on `topic`, read from the start until
    `until` of them arrived and then `settle_s` more (a repeat would show)."""
    found: list[tuple[str, dict[str, object]]] = []
    loop = asyncio.get_running_loop()
    deadline, settled = loop.time() + 120, None
    async with reading_from_start(servers, topic) as consumer:
        while loop.time() < deadline and (settled is None or loop.time() < settled):
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    lead = (record.key or b"").decode()
                    if lead in leads:
                        found.append((lead, orjson.loads(record.value)))
            if settled is None and len(found) >= until:
                settled = loop.time() + settle_s
    return found


async def dead_letters_of(servers: str, topic: str, leads: set[str]) -> list[str]:
    """The leads of every record about `leads` on the dead-letter `topic`, as it is now."""
    consumer = AIOKafkaConsumer(  # no group: every partition is assigned at start
        topic, bootstrap_servers=servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = list(consumer.assignment())
        assert partitions, f"{topic} does not exist"
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[str] = []
        async with asyncio.timeout(60):
            while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found += [r.key.decode() for r in records if r.key and r.key.decode() in leads]
        return found
    finally:
        await consumer.stop()


async def block(admin_url: str, database: str, *, allow: bool) -> None:
    """Refuse (or allow again) connections to `database`, dropping the ones it has."""
    statements = [f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}']
    if not allow:
        statements.append(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}'"  # our own generated name (t_<hex>)
        )
    await admin_execute(admin_url, *statements)


async def test_events_arriving_while_the_database_is_away_are_applied_once_when_it_is_back(
    kafka_servers: str, postgres_admin_url: str, tmp_path: Path
) -> None:
    before, during = [uuid.uuid4() for _ in range(LEADS)], [uuid.uuid4() for _ in range(LEADS)]
    leads = {str(lead) for lead in before + during}
    async with new_pg_database(postgres_admin_url) as url:
        database = make_url(url).database
        assert database is not None
        async with served_qualification(kafka_servers, url, tmp_path) as publisher:
            await publish_mql_leads(publisher, before)
            await records_of(kafka_servers, Topics.LEAD_STAGE, leads, until=2 * LEADS, settle_s=0)
            await block(postgres_admin_url, database, allow=False)
            try:
                await publish_mql_leads(publisher, during)
                await asyncio.sleep(4)
            finally:
                await block(postgres_admin_url, database, allow=True)
            stages = await records_of(kafka_servers, Topics.LEAD_STAGE, leads, until=4 * LEADS)
    dead = await dead_letters_of(
        kafka_servers, dead_letter_topic(definition().consumer_group), leads
    )

    per_lead: dict[str, list[object]] = {lead: [] for lead in leads}
    for lead, value in stages:
        per_lead[lead].append(value["to_stage"])
    assert per_lead == {lead: ["lead", "mql"] for lead in leads}
    assert dead == []

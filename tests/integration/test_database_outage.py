"""A service's database goes away for a few seconds while events keep coming (Kafka and
PostgreSQL real): the service's consumer is restarted, nothing is dead-lettered for the
outage, and every lead ends where it would have, each stage change announced once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy.engine import make_url

from services.qualification.app import create_app, definition
from shared.bus.kafka import KafkaBus
from shared.bus.port import OutgoingMessage
from shared.events.catalog import CATALOG, Topics, dead_letter_topic
from shared.events.codec import build_envelope, to_binary
from shared.events.payloads import LeadActivity, LeadCaptured
from shared.migrations import upgrade
from shared.settings import load_settings
from tests.conftest import new_pg_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LEADS = 8


async def publish_mql_leads(bus: KafkaBus, leads: list[uuid.UUID]) -> None:
    """Each lead captured with a good fit, then a demo request: an MQL (40 + 50)."""
    for lead in leads:
        for payload in (
            LeadCaptured(
                lead_id=lead,
                source="marketing",
                email_kind="business",
                email_domain="acme.com",
                profile={"company_size": 400, "seniority": "vp"},
            ),
            LeadActivity(
                lead_id=lead,
                activity_id=uuid.uuid4(),
                activity_type="demo_request",
                occurred_at=datetime.now(UTC),
            ),
        ):
            envelope = build_envelope(
                CATALOG, payload, source_service="intake", subject=str(lead), sequence=1
            )
            key, headers, value = to_binary(envelope)
            topic = CATALOG.for_payload(payload).topic
            await bus.publish([OutgoingMessage(topic, key, value, headers)])


async def records_of(
    servers: str, topic: str, leads: set[str], *, until: int, settle_s: float = 2.0
) -> list[tuple[str, dict[str, object]]]:
    """(lead, value) of the records about `leads` on `topic`, read from the start until
    `until` of them arrived and then `settle_s` more (a repeat would show)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"check-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[tuple[str, dict[str, object]]] = []
    loop = asyncio.get_running_loop()
    deadline, settled = loop.time() + 120, None
    try:
        while loop.time() < deadline and (settled is None or loop.time() < settled):
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    lead = (record.key or b"").decode()
                    if lead in leads:
                        found.append((lead, orjson.loads(record.value)))
            if settled is None and len(found) >= until:
                settled = loop.time() + settle_s
    finally:
        await consumer.stop()
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
    admin = make_url(admin_url)
    conn = await asyncpg.connect(
        user=admin.username,
        password=admin.password,
        host=admin.host,
        port=admin.port,
        database=admin.database,
    )
    try:
        await conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allow).lower()}')
        if not allow:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
    finally:
        await conn.close()


async def test_events_arriving_while_the_database_is_away_are_applied_once_when_it_is_back(
    kafka_servers: str, postgres_admin_url: str, tmp_path: Path
) -> None:
    before, during = [uuid.uuid4() for _ in range(LEADS)], [uuid.uuid4() for _ in range(LEADS)]
    leads = {str(lead) for lead in before + during}
    async with new_pg_database(postgres_admin_url) as url:
        database = make_url(url).database
        assert database is not None
        settings = load_settings(
            "qualification",
            database_url=url,
            data_dir=tmp_path,
            kafka_bootstrap_servers=kafka_servers,
            env="dev",
        )
        await upgrade(definition().migrations, url)
        app = create_app(settings)
        publisher = KafkaBus(kafka_servers, client_id="test-intake")
        await publisher.start()
        try:
            async with app.router.lifespan_context(app):
                await publish_mql_leads(publisher, before)
                await records_of(
                    kafka_servers, Topics.LEAD_STAGE, leads, until=2 * LEADS, settle_s=0
                )
                await block(postgres_admin_url, database, allow=False)
                try:
                    await publish_mql_leads(publisher, during)
                    await asyncio.sleep(4)
                finally:
                    await block(postgres_admin_url, database, allow=True)
                stages = await records_of(kafka_servers, Topics.LEAD_STAGE, leads, until=4 * LEADS)
        finally:
            await publisher.close()
    dead = await dead_letters_of(
        kafka_servers, dead_letter_topic(definition().consumer_group), leads
    )

    per_lead: dict[str, list[object]] = {lead: [] for lead in leads}
    for lead, value in stages:
        per_lead[lead].append(value["to_stage"])
    assert per_lead == {lead: ["lead", "mql"] for lead in leads}
    assert dead == []

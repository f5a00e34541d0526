"""On real Kafka and PostgreSQL: a captured lead and its activities become an MQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from services.qualification.app import create_app, definition
from shared.bus.kafka import KafkaBus
from shared.bus.port import OutgoingMessage
from shared.events.catalog import CATALOG
from shared.events.codec import build_envelope, to_binary
from shared.events.payloads import LeadActivity, LeadCaptured
from shared.migrations import upgrade
from shared.settings import load_settings
from tests.conftest import new_pg_database


async def publish(bus: KafkaBus, payload: LeadCaptured | LeadActivity) -> None:
    envelope = build_envelope(
        CATALOG, payload, source_service="intake", subject=str(payload.lead_id), sequence=1
    )
    key, headers, value = to_binary(envelope)
    await bus.publish([OutgoingMessage(CATALOG.for_payload(payload).topic, key, value, headers)])


async def events_of(
    servers: str, topic: str, lead: str, *, field: str, until: object
) -> list[object]:
    """Values of `field` in a lead's events on a topic, up to the first equal to `until`."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=f"check-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[object] = []
    try:
        async with asyncio.timeout(60):
            async for record in consumer:
                if record.key == lead.encode():
                    values.append(orjson.loads(record.value)[field])
                    if values[-1] == until:
                        return values
    finally:
        await consumer.stop()
    return values


async def test_a_captured_lead_with_a_demo_request_becomes_an_mql_on_kafka(
    kafka_servers: str, postgres_admin_url: str, tmp_path: Path
) -> None:
    lead = uuid.uuid4()
    async with new_pg_database(postgres_admin_url) as url:
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
        async with app.router.lifespan_context(app):
            await publish(
                publisher,
                LeadCaptured(
                    lead_id=lead,
                    source="marketing",
                    email_kind="business",
                    email_domain="acme.com",
                    profile={"company_size": 400, "seniority": "vp"},
                ),
            )
            await publish(
                publisher,
                LeadActivity(
                    lead_id=lead,
                    activity_id=uuid.uuid4(),
                    activity_type="demo_request",
                    occurred_at=datetime.now(UTC),
                ),
            )
            stages = await events_of(
                kafka_servers, "handoff.lead.stage", str(lead), field="to_stage", until="mql"
            )
            scores = await events_of(
                kafka_servers, "handoff.lead.scored", str(lead), field="score", until=90.0
            )
        await publisher.close()

    assert stages == ["lead", "mql"]
    # Capture and activity travel on different topics: either order ends at fit 40 + demo 50.
    assert scores[-1] == 90.0

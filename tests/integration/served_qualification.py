"""Qualification served in this process on real Kafka and PostgreSQL, and a stand-in for
intake that publishes to it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from services.qualification.app import create_app, definition
from shared.bus.kafka import KafkaBus
from shared.bus.port import OutgoingMessage
from shared.events.catalog import CATALOG
from shared.events.codec import build_envelope, to_binary
from shared.events.payloads import LeadActivity, LeadCaptured
from shared.migrations import upgrade
from shared.settings.loading import load_settings


def becoming_an_mql(lead: uuid.UUID) -> list[LeadCaptured | LeadActivity]:
    """A lead captured with a good fit (40), then its demo request (50): an MQL at 90."""
    return [
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
    ]


async def publish(bus: KafkaBus, payload: LeadCaptured | LeadActivity) -> None:
    """`payload` as intake would publish it (the lead's first event of its kind)."""
    envelope = build_envelope(
        CATALOG, payload, source_service="intake", subject=str(payload.lead_id), sequence=1
    )
    key, headers, value = to_binary(envelope)
    await bus.publish([OutgoingMessage(CATALOG.for_payload(payload).topic, key, value, headers)])


@contextlib.asynccontextmanager
async def served_qualification(
    kafka_servers: str, database_url: str, data_dir: Path
) -> AsyncIterator[KafkaBus]:
    """Qualification running (migrated, consumers and relay started) on `database_url`;
    yields a bus to publish intake's events with."""
    settings = load_settings(
        "qualification",
        database_url=database_url,
        data_dir=data_dir,
        kafka_bootstrap_servers=kafka_servers,
        env="dev",
    )
    await upgrade(definition().migrations, database_url)
    app = create_app(settings)
    publisher = KafkaBus(kafka_servers, client_id="test-intake")
    await publisher.start()
    try:
        async with app.router.lifespan_context(app):
            yield publisher
    finally:
        await publisher.close()

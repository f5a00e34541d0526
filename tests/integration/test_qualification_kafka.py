"""On real Kafka and PostgreSQL: a captured lead and its activities become an MQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson

from tests.conftest import new_pg_database
from tests.integration.served_qualification import (
    becoming_an_mql,
    publish,
    served_qualification,
)
from tests.support import reading_from_start


async def events_of(
    servers: str, topic: str, lead: str, *, field: str, until: object
) -> list[object]:
    """Values of `field` in a lead's events on a topic, up to the first equal to `until`."""
    values: list[object] = []
    async with reading_from_start(servers, topic) as consumer, asyncio.timeout(60):
        async for record in consumer:
            if record.key == lead.encode():
                values.append(orjson.loads(record.value)[field])
                if values[-1] == until:
                    return values
    return values


async def test_a_captured_lead_with_a_demo_request_becomes_an_mql_on_kafka(
    kafka_servers: str, postgres_admin_url: str, tmp_path: Path
) -> None:
    lead = uuid.uuid4()
    async with (
        new_pg_database(postgres_admin_url) as url,
        served_qualification(kafka_servers, url, tmp_path) as publisher,
    ):
        for payload in becoming_an_mql(lead):
            await publish(publisher, payload)
        stages = await events_of(
            kafka_servers, "handoff.lead.stage", str(lead), field="to_stage", until="mql"
        )
        scores = await events_of(
            kafka_servers, "handoff.lead.scored", str(lead), field="score", until=90.0
        )

    assert stages == ["lead", "mql"]
    # Capture and activity travel on different topics: either order ends at fit 40 + demo 50.
    assert scores[-1] == 90.0

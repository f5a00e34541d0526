"""A lead captured by intake reaches Kafka keyed by lead id, in CloudEvents binary mode."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import orjson

from services.intake.app import create_app, definition
from shared.auth.token_store import TokenStore
from shared.migrations import upgrade
from shared.settings.loading import load_settings
from shared.settings.services import IntakeSettings
from tests.conftest import new_pg_database
from tests.support import reading_from_start


async def first_record_for(servers: str, topic: str, key: str) -> object:
    async with reading_from_start(servers, topic) as consumer, asyncio.timeout(60):
        async for record in consumer:
            if record.key == key.encode():
                return record
    raise AssertionError("unreachable")


async def test_a_captured_lead_reaches_kafka_with_its_key_and_cloudevents_headers(
    kafka_servers: str, postgres_admin_url: str, tmp_path: Path
) -> None:
    async with new_pg_database(postgres_admin_url) as url:
        settings = load_settings(
            "intake",
            database_url=url,
            data_dir=tmp_path,
            kafka_bootstrap_servers=kafka_servers,
            env="dev",
        )
        assert isinstance(settings, IntakeSettings)
        await upgrade(definition().migrations, url)
        app = create_app(settings)
        token = TokenStore(settings.resolved_tokens_file()).create(name="crm", role="integration")
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://intake"
            ) as client,
        ):
            response = await client.post(
                "/v1/leads",
                headers={"Authorization": f"Bearer {token}"},
                json={"email": f"{uuid.uuid4().hex}@kafka-test.io"},
            )
            lead_id = response.json()["lead_id"]
            record = await first_record_for(kafka_servers, "handoff.lead.captured", lead_id)

    headers = {k: v.decode() for k, v in record.headers}  # type: ignore[attr-defined]
    assert headers["ce_type"] == "handoff.lead.captured.v1"
    assert headers["ce_source"] == "/handoff/intake"
    assert headers["ce_subject"] == headers["ce_partitionkey"] == lead_id
    assert headers["ce_specversion"] == "1.0"
    assert headers["content-type"] == "application/json"
    assert len(headers["ce_traceparent"].split("-")[1]) == 32
    assert orjson.loads(record.value)["email_domain"] == "kafka-test.io"  # type: ignore[attr-defined]

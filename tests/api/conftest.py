"""An intake service on a real database (SQLite file, or a fresh PostgreSQL database)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from sqlalchemy import select

from shared.auth.token_store import TokenStore
from shared.bus.port import OutgoingMessage, Record
from shared.events.catalog import CATALOG
from shared.events.codec import build_envelope, from_binary, to_binary
from shared.migrations import upgrade
from shared.runtime import ServiceRuntime
from shared.service_app import service_module
from shared.settings.loading import load_settings
from tests.conftest import new_pg_database
from tests.support import collect


@dataclass
class Service:
    """One service on a real database, with an HTTP client and its token store."""

    client: httpx.AsyncClient
    tokens: TokenStore
    runtime: ServiceRuntime

    def auth(
        self, role: str = "integration", team: str | None = None, name: str | None = None
    ) -> dict[str, str]:
        token = self.tokens.create(
            name=name or f"{role}-{uuid.uuid4().hex[:6]}", role=role, team=team
        )
        return {"Authorization": f"Bearer {token}"}

    async def publish(self, payload: BaseModel, *, source: str) -> str:
        """Put an event on the bus as another service would."""
        subject = str(payload.lead_id)
        envelope = build_envelope(
            CATALOG, payload, source_service=source, subject=subject, sequence=1
        )
        key, headers, value = to_binary(envelope)
        topic = CATALOG.for_payload(payload).topic
        await self.runtime.bus.publish([OutgoingMessage(topic, key, value, headers)])
        return str(envelope.id)

    async def consumed(self, event_id: str) -> None:
        """Wait until this service's consumer has handled the event (its inbox says so)."""
        inbox = self.runtime.definition.inbox_table
        for _ in range(200):
            async with self.runtime.db.engine.connect() as conn:
                seen = await conn.scalar(
                    select(inbox.c.event_id).where(inbox.c.event_id == event_id)
                )
            if seen:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"event {event_id} was never consumed")

    async def events(self, topic: str, count: int) -> list[dict[str, Any]]:
        """The events on a topic so far (waits until `count` arrived)."""
        subscription = self.runtime.bus.subscribe(group=f"t-{uuid.uuid4().hex}", topics=[topic])
        await subscription.start()
        records = await collect(subscription, count, timeout=10)
        await subscription.close()
        return [event(r) for r in records]


def event(record: Record) -> dict[str, Any]:
    envelope = from_binary(record.headers, record.value)
    return {
        "key": record.key,
        "type": envelope.type,
        "subject": envelope.subject,
        "data": envelope.data,
        "sequence": envelope.sequence,
        "traceparent": envelope.traceparent,
    }


Intake = Service
Qualification = Service


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def intake(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Service]:
    async for harness in _on_database(request, tmp_path, "intake"):
        yield harness


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def qualification(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Service]:
    async for harness in _on_database(request, tmp_path, "qualification"):
        yield harness


async def _on_database(
    request: pytest.FixtureRequest, tmp_path: Path, service: str
) -> AsyncIterator[Service]:
    if request.param == "sqlite":
        async for harness in _serve(
            service, f"sqlite+aiosqlite:///{tmp_path / service}.db", tmp_path
        ):
            yield harness
        return
    async with new_pg_database(request.getfixturevalue("postgres_admin_url")) as url:
        async for harness in _serve(service, url, tmp_path):
            yield harness


async def _serve(service: str, url: str, data_dir: Path) -> AsyncIterator[Service]:
    # Intake's import-validation pool would start a process for every test; the tests of
    # imports that use it make their own (test_intake_imports_and_activities.py).
    extra = {"import_parse_processes": 0} if service == "intake" else {}
    settings = load_settings(
        service,
        database_url=url,
        kafka_bootstrap_servers=None,
        data_dir=data_dir,
        env="dev",
        **extra,
    )
    module = service_module(service)
    await upgrade(module.definition().migrations, url)
    app = module.create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url=f"http://{service}.test"
        ) as client:
            yield Service(
                client, TokenStore(settings.resolved_tokens_file()), app.state.runtimes[service]
            )

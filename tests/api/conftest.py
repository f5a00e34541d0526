"""An intake service on a real database (SQLite file, or a fresh PostgreSQL database)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.intake.app import create_app, definition
from shared.auth import TokenStore
from shared.bus.port import Record
from shared.events.codec import from_binary
from shared.migrations import upgrade
from shared.runtime import ServiceRuntime
from shared.settings import IntakeSettings, load_settings
from tests.conftest import new_pg_database
from tests.support import collect


@dataclass
class Intake:
    client: httpx.AsyncClient
    tokens: TokenStore
    runtime: ServiceRuntime

    def auth(self, role: str = "integration", team: str | None = None) -> dict[str, str]:
        token = self.tokens.create(name=f"{role}-{uuid.uuid4().hex[:6]}", role=role, team=team)
        return {"Authorization": f"Bearer {token}"}

    async def events(self, topic: str, count: int) -> list[dict[str, Any]]:
        """The events on a topic so far (waits until `count` arrived)."""
        subscription = self.runtime.bus.subscribe(group=f"t-{uuid.uuid4().hex}", topics=[topic])
        await subscription.start()
        records = await collect(subscription, count, timeout=10)
        await subscription.close()
        return [_event(r) for r in records]


def _event(record: Record) -> dict[str, Any]:
    envelope = from_binary(record.headers, record.value)
    return {
        "key": record.key,
        "type": envelope.type,
        "subject": envelope.subject,
        "data": envelope.data,
        "sequence": envelope.sequence,
    }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def intake(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Intake]:
    if request.param == "sqlite":
        async for harness in _serve(f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}", tmp_path):
            yield harness
        return
    async with new_pg_database(request.getfixturevalue("postgres_admin_url")) as url:
        async for harness in _serve(url, tmp_path):
            yield harness


async def _serve(url: str, data_dir: Path) -> AsyncIterator[Intake]:
    settings = load_settings(
        "intake", database_url=url, kafka_bootstrap_servers=None, data_dir=data_dir, env="dev"
    )
    assert isinstance(settings, IntakeSettings)
    await upgrade(definition().migrations, url)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake.test") as client:
            yield Intake(
                client, TokenStore(settings.resolved_tokens_file()), app.state.runtimes["intake"]
            )

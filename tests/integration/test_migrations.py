"""Every service's migration history builds its schema from empty, matches its models, and
steps back down, on SQLite (embedded) and PostgreSQL (distributed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from shared.migration_ownership import OWNER_TABLE
from shared.migrations import upgrade
from shared.service_app import service_definition
from shared.settings.services import SERVICES
from tests.conftest import new_pg_database


def not_the_owner(name: str | None, type_: str, _parents: object) -> bool:
    return not (type_ == "table" and name == OWNER_TABLE)  # handoff's, in no service's models


async def schema_drift(url: str, service: str) -> list[object]:
    metadata = service_definition(service).metadata
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"include_name": not_the_owner}), metadata
            )
        )
    await engine.dispose()
    return list(diff)


async def table_names(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await engine.dispose()
    return names


async def check_history(url: str, service: str) -> None:
    migrations = service_definition(service).migrations
    await upgrade(migrations, url)
    assert {"outbox", "inbox", "event_sequences"} <= await table_names(url)
    assert await schema_drift(url, service) == []
    await upgrade(migrations, url)  # idempotent: a second start finds nothing to do


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_build_the_schema_from_empty_on_sqlite(
    service: str, tmp_path: Path
) -> None:
    await check_history(f"sqlite+aiosqlite:///{tmp_path / service}.db", service)


@pytest.mark.parametrize("service", SERVICES)
async def test_migrations_build_the_schema_from_empty_on_postgres(
    service: str, postgres_admin_url: str
) -> None:
    async with new_pg_database(postgres_admin_url) as url:
        await check_history(url, service)

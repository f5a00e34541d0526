"""Alembic, per service: each service has its own migration history in its own database."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import Database, without_jit


def alembic_config(migrations: Path, url: str) -> Config:
    """An Alembic config for one service's migrations directory and database URL."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(migrations: Path, url: str, revision: str = "head") -> None:
    """Apply a service's migrations up to `revision` (safe with several replicas starting)."""
    Database(url)  # creates the SQLite file's directory when needed
    await asyncio.to_thread(command.upgrade, alembic_config(migrations, url), revision)


def run_env(metadata: MetaData) -> None:
    """Body of every service's `migrations/env.py`."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=metadata,
            literal_binds=True,
            render_as_batch=url.startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url, metadata))


async def _run_online(url: str, metadata: MetaData) -> None:
    engine = without_jit(create_async_engine(url))
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_migrate, metadata)
    finally:
        await engine.dispose()


def _migrate(conn: Connection, metadata: MetaData) -> None:
    is_postgres = conn.dialect.name == "postgresql"
    if is_postgres:  # one replica migrates; the others wait and then find nothing to do
        lock = zlib.crc32(str(metadata.tables.keys()).encode())
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock})
    try:
        context.configure(
            connection=conn,
            target_metadata=metadata,
            render_as_batch=not is_postgres,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
    finally:
        if is_postgres:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": lock})
            conn.commit()

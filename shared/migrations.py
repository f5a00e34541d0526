"""Alembic, per service: each service has its own migration history in its own database.

A database belongs to one service. Every service numbers its revisions from 0001 and keeps
them in `alembic_version`, so nothing in Alembic tells one service's database from
another's: the first migration also writes the service's name into `handoff_service` (one
row, in the same transaction), and a database named for another service is refused before
anything is run. A database migrated before that table existed is adopted by the service
asking for it when its tables are exactly that service's at the revision it holds and its
inbox names no other service's consumer group; otherwise it is refused.
"""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

from alembic import context
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.alembic_commands import alembic_config, run_upgrade
from shared.db import without_jit
from shared.migration_errors import MigrationError, reported, shown
from shared.migration_ownership import OWNER_TABLE, check_surveyed_owner, claim, surveyed

_SERVICE = "handoff.service"  # config attributes read by `run_env`
_ADOPT = "handoff.adopt"
# One lock per database (whichever service asks), so that the owner is checked and
# written by one migration at a time.
MIGRATION_LOCK = zlib.crc32(b"handoff.migrations")


async def upgrade(
    migrations: Path, url: str, revision: str = "head", *, service: str | None = None
) -> None:
    """Apply a service's migrations up to `revision` (safe with several replicas starting).

    `service` (by default the name of the directory holding `migrations`) must own the
    database, or the database must be new: `MigrationError` otherwise, when the database
    cannot be reached, and when it is past `revision` already (this only upgrades)."""
    service = service or migrations.parent.name
    found = await surveyed(url)
    adopt = await check_surveyed_owner(service, url, found)
    _refuse_going_back(migrations, url, found.revisions, revision, service)
    config = alembic_config(migrations, url)
    config.attributes[_SERVICE] = service
    config.attributes[_ADOPT] = adopt
    with reported(url):
        await asyncio.to_thread(run_upgrade, config, revision)


async def check_owner(migrations: Path, url: str, *, service: str | None = None) -> bool:
    """Raise `MigrationError` unless the database at `url` can be reached and is new or
    `service`'s (see the module's docstring); true when it was migrated before its owner was
    recorded (the next migration records it)."""
    service = service or migrations.parent.name
    return await check_surveyed_owner(service, url, await surveyed(url))


def _refuse_going_back(
    migrations: Path, url: str, current: frozenset[str], target: str, service: str
) -> None:
    """`MigrationError` when the database is past `target` (Alembic's upgrade would do
    nothing and say nothing); a revision Alembic cannot place is left for it to name."""
    if not current:
        return
    scripts = ScriptDirectory.from_config(alembic_config(migrations, url))
    try:
        targets = {r.revision for r in scripts.get_revisions(target) if r is not None}
        behind = {
            r.revision
            for revision in current
            for r in scripts.iterate_revisions(revision, "base")
            if r is not None and r.revision != revision
        }
    except (CommandError, RevisionError):  # not in this history: Alembic's to report
        return
    if target == "base" or (targets and targets <= behind):
        at = ", ".join(sorted(current))
        raise MigrationError(
            shown(url), f"{service} is at {at}, past {target}: handoff migrate only upgrades"
        )


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
            include_name=_not_owner_table,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_online(url, metadata))


def _not_owner_table(name: str | None, type_: str, _parents: object) -> bool:
    """Autogenerate leaves `handoff_service` alone (no service's models have it)."""
    return not (type_ == "table" and name == OWNER_TABLE)


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
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
    try:
        context.configure(
            connection=conn,
            target_metadata=metadata,
            render_as_batch=not is_postgres,
            compare_type=True,
            include_name=_not_owner_table,
        )
        service = context.config.attributes.get(_SERVICE)
        with context.begin_transaction():
            if service is not None:
                claim(conn, service, adopt=bool(context.config.attributes.get(_ADOPT)))
            context.run_migrations()
        conn.commit()
    finally:
        if is_postgres:  # after a failure too (the lock outlives the rollback)
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            conn.commit()

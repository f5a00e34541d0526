"""Whose a database is: its owner recorded in `handoff_service`, or, for a database migrated
before that table existed, the service whose tables and inbox it holds (see `shared.migrations`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, String, Table, insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.alembic_commands import alembic_config, run_upgrade
from shared.db import without_jit
from shared.migration_errors import MigrationError, reported, shown
from shared.observability.logging import quieted
from shared.sqlite_files import check_sqlite_file

OWNER_TABLE = "handoff_service"
_owner = Table(OWNER_TABLE, MetaData(), Column("name", String(100), primary_key=True))
_VERSION_TABLE = "alembic_version"


async def surveyed(url: str) -> Survey:
    """What the database at `url` holds, for the owner checks (`MigrationError` if unusable)."""
    check_sqlite_file(url)
    engine = without_jit(create_async_engine(url))
    try:
        with reported(url):
            async with engine.connect() as conn:
                return await conn.run_sync(_survey)
    finally:
        await engine.dispose()


async def check_surveyed_owner(service: str, url: str, found: Survey) -> bool:
    """`shared.migrations.check_owner` on a database already surveyed."""
    if found.owner is not None:
        if found.owner != service:
            raise MigrationError(shown(url), _belongs_to(found.owner, service))
        return False
    if not found.revisions:
        theirs = found.tables & _known_tables() if found.tables else frozenset()
        if theirs:
            raise MigrationError(
                shown(url),
                f"it has tables ({', '.join(sorted(theirs))}) but no migration history "
                f"(alembic_version): not a database handoff migrated, so not {service}'s",
            )
        return False
    await asyncio.to_thread(_check_adoption, service, url, found)
    return True


def claim(conn: Connection, service: str, *, adopt: bool) -> None:
    """Record `service` as the database's owner, unless another service is (checked again
    here, under the lock, in the migration's transaction)."""
    _owner.create(conn, checkfirst=True)
    owner = conn.execute(select(_owner.c.name)).scalars().first()
    url = shown(conn.engine.url.render_as_string(hide_password=False))
    if owner is None:
        if not adopt and _revisions(conn):  # migrated by someone else since it was checked
            raise MigrationError(url, f"migrated meanwhile by another service, not {service}")
        conn.execute(insert(_owner).values(name=service))
    elif owner != service:
        raise MigrationError(url, _belongs_to(owner, service))


@dataclass(frozen=True)
class Survey:
    """What a database holds that tells whose it is."""

    tables: frozenset[str]
    owner: str | None
    revisions: frozenset[str]
    consumer_groups: frozenset[str]  # those of the services the inbox names


def _survey(conn: Connection) -> Survey:
    tables = frozenset(inspect(conn).get_table_names())
    owner = None
    if OWNER_TABLE in tables:
        owner = conn.execute(select(_owner.c.name)).scalars().first()
    revisions = _revisions(conn) if _VERSION_TABLE in tables else frozenset()
    groups: set[str] = set()
    if owner is None and revisions and "inbox" in tables:
        for group in _known_consumer_groups():
            named = text("SELECT 1 FROM inbox WHERE consumer_group = :g LIMIT 1")
            if conn.execute(named, {"g": group}).first() is not None:
                groups.add(group)
    return Survey(tables - {_VERSION_TABLE, OWNER_TABLE}, owner, revisions, frozenset(groups))


def _revisions(conn: Connection) -> frozenset[str]:
    if not inspect(conn).has_table(_VERSION_TABLE):
        return frozenset()
    rows = conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}"))  # noqa: S608
    return frozenset(rows.scalars())


def _check_adoption(service: str, url: str, found: Survey) -> None:
    """A database with migrations but no owner: `service`'s if its tables are exactly
    `service`'s at the revision it holds and its inbox names no other service; else refused,
    naming the services it looks like."""
    definitions = _definitions()
    known_tables = _known_tables()

    def looks_like(name: str) -> bool:
        definition = definitions.get(name)
        if definition is None or not found.revisions <= _history(definition.migrations):
            return False
        expected = _tables_at(definition.migrations, found.revisions)
        return expected <= found.tables and not found.tables & (known_tables - expected)

    named = {name for name, d in definitions.items() if d.consumer_group in found.consumer_groups}
    if service not in definitions:  # not one of ours (a test's): nothing to compare with
        if named:
            raise MigrationError(shown(url), _holds(sorted(named), service))
        return
    if looks_like(service) and named <= {service}:
        return
    others = sorted(named - {service} or {n for n in definitions if n != service and looks_like(n)})
    if others:
        raise MigrationError(shown(url), _holds(others, service))
    revisions = ", ".join(sorted(found.revisions))
    raise MigrationError(
        shown(url),
        f"its migrations (revision {revisions}, no owner recorded) are not {service}'s "
        f"and match no service's: give {service} its own database",
    )


@dataclass(frozen=True)
class _Definition:
    migrations: Path
    tables: frozenset[str]
    consumer_group: str


@cache
def _definitions() -> dict[str, _Definition]:
    from shared.service_app import service_definition  # the services import `shared`
    from shared.settings.services import SERVICES

    definitions = {}
    for name in SERVICES:
        definition = service_definition(name)
        definitions[name] = _Definition(
            definition.migrations,
            frozenset(definition.metadata.tables),
            definition.consumer_group,
        )
    return definitions


def _known_tables() -> frozenset[str]:
    return frozenset().union(*(d.tables for d in _definitions().values()))


def _known_consumer_groups() -> list[str]:
    return [definition.consumer_group for definition in _definitions().values()]


@cache
def _history(migrations: Path) -> frozenset[str]:
    scripts = ScriptDirectory.from_config(alembic_config(migrations, "sqlite://"))
    return frozenset(script.revision for script in scripts.walk_revisions())


@cache
def _tables_at(migrations: Path, revisions: frozenset[str]) -> frozenset[str]:
    """The tables a service's history has made at `revisions` (run into a scratch SQLite)."""
    with tempfile.TemporaryDirectory() as scratch, quieted("alembic"):
        path = Path(scratch) / "reference.db"
        config = alembic_config(migrations, f"sqlite+aiosqlite:///{path}")
        for revision in sorted(revisions):
            run_upgrade(config, revision)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            names = {name for (name,) in rows if not name.startswith("sqlite_")}
    return frozenset(names - {_VERSION_TABLE})


def _belongs_to(owner: str, service: str) -> str:
    return f"this is {owner}'s database, not {service}'s: give {service} its own database"


def _holds(owners: list[str], service: str) -> str:
    whose = (
        f"{owners[0]}'s database"
        if len(owners) == 1
        else f"the database of {', '.join(owners[:-1])} or {owners[-1]}"
    )
    return (
        f"migrated before owners were recorded, it looks like {whose}, not {service}'s: "
        f"give {service} its own database"
    )

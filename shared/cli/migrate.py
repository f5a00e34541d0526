"""`handoff migrate`: apply each service's Alembic migrations to its own database."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from alembic.util import CommandError as AlembicError

from shared.cli.console import console, database_failed, fail
from shared.migration_errors import MigrationError
from shared.migrations import upgrade
from shared.service_app import service_definition
from shared.settings.base import DatabaseSettings
from shared.settings.loading import SettingsError, read_settings
from shared.settings.services import SERVICES


def migrate(
    services: Annotated[
        list[str] | None, typer.Argument(help="Services to migrate (default: all).")
    ] = None,
    revision: Annotated[
        str, typer.Option(help="Target revision (upgrades only: a database past it is refused).")
    ] = "head",
) -> None:
    """Apply Alembic migrations to each service's own database.

    Without `DATABASE_URL` each service's SQLite file under the data directory; with it,
    that one database, so name the one service it belongs to. Only `DATABASE_URL` (and,
    in dev, `HANDOFF_DATA_DIR`) is read: none of the services' other settings.
    """
    names = services or list(SERVICES)
    if unknown := [name for name in names if name not in SERVICES]:
        fail(f"unknown service {unknown[0]!r}; expected one of {', '.join(SERVICES)}")
    try:
        settings = read_settings(DatabaseSettings)
    except SettingsError as exc:
        fail(str(exc))
    if settings.database_url is not None and len(names) > 1:
        fail(
            "DATABASE_URL is one service's database: migrate that service alone "
            f"(DATABASE_URL=... handoff migrate {names[0]})"
        )
    for name in names:
        url = settings.resolved_database_url(name)
        try:
            asyncio.run(upgrade(service_definition(name).migrations, url, revision))
        except MigrationError as exc:
            database_failed(exc, from_environment=settings.database_url is not None)
        except AlembicError as exc:
            fail(f"migrating {name} failed: {exc}")
        console.print(f"migrated {name} to {revision}")

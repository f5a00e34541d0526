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
import contextlib
import errno
import socket
import sqlite3
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Column, MetaData, String, Table, insert, inspect, select, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import without_jit
from shared.observability.logging import quieted

OWNER_TABLE = "handoff_service"
_owner = Table(OWNER_TABLE, MetaData(), Column("name", String(100), primary_key=True))
_VERSION_TABLE = "alembic_version"
_SERVICE = "handoff.service"  # config attributes read by `run_env`
_ADOPT = "handoff.adopt"
# Alembic's `context` is one per process: one command at a time in a process.
_ALEMBIC = threading.Lock()
# One lock per database (whichever service asks), so that the owner is checked and
# written by one migration at a time.
MIGRATION_LOCK = zlib.crc32(b"handoff.migrations")


class MigrationError(Exception):
    """A database a service cannot use: unreachable, or not that service's.

    `url` is the database's URL without its password; `problem` says what is wrong."""

    def __init__(self, url: str, problem: str) -> None:
        super().__init__(f"{url}: {problem}")
        self.url = url
        self.problem = problem


def alembic_config(migrations: Path, url: str) -> Config:
    """An Alembic config for one service's migrations directory and database URL."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(
    migrations: Path, url: str, revision: str = "head", *, service: str | None = None
) -> None:
    """Apply a service's migrations up to `revision` (safe with several replicas starting).

    `service` (by default the name of the directory holding `migrations`) must own the
    database, or the database must be new: `MigrationError` otherwise, when the database
    cannot be reached, and when it is past `revision` already (this only upgrades)."""
    service = service or migrations.parent.name
    found = await _surveyed(url)
    adopt = await _check_owner(service, url, found)
    _refuse_going_back(migrations, url, found.revisions, revision, service)
    config = alembic_config(migrations, url)
    config.attributes[_SERVICE] = service
    config.attributes[_ADOPT] = adopt
    with _reported(url):
        await asyncio.to_thread(_run_upgrade, config, revision)


def _run_upgrade(config: Config, revision: str) -> None:
    with _ALEMBIC:
        command.upgrade(config, revision)


async def check_owner(migrations: Path, url: str, *, service: str | None = None) -> bool:
    """Raise `MigrationError` unless the database at `url` can be reached and is new or
    `service`'s (see the module's docstring); true when it was migrated before its owner was
    recorded (the next migration records it)."""
    service = service or migrations.parent.name
    return await _check_owner(service, url, await _surveyed(url))


async def _surveyed(url: str) -> _Survey:
    _check_sqlite_file(url)
    engine = without_jit(create_async_engine(url))
    try:
        with _reported(url):
            async with engine.connect() as conn:
                return await conn.run_sync(_survey)
    finally:
        await engine.dispose()


async def _check_owner(service: str, url: str, found: _Survey) -> bool:
    if found.owner is not None:
        if found.owner != service:
            raise MigrationError(_shown(url), _belongs_to(found.owner, service))
        return False
    if not found.revisions:
        theirs = found.tables & _known_tables() if found.tables else frozenset()
        if theirs:
            raise MigrationError(
                _shown(url),
                f"it has tables ({', '.join(sorted(theirs))}) but no migration history "
                f"(alembic_version): not a database handoff migrated, so not {service}'s",
            )
        return False
    await asyncio.to_thread(_check_adoption, service, url, found)
    return True


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
            _shown(url), f"{service} is at {at}, past {target}: handoff migrate only upgrades"
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
                _claim(conn, service, adopt=bool(context.config.attributes.get(_ADOPT)))
            context.run_migrations()
        conn.commit()
    finally:
        if is_postgres:  # after a failure too (the lock outlives the rollback)
            conn.rollback()
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
            conn.commit()


def _claim(conn: Connection, service: str, *, adopt: bool) -> None:
    """Record `service` as the database's owner, unless another service is (checked again
    here, under the lock, in the migration's transaction)."""
    _owner.create(conn, checkfirst=True)
    owner = conn.execute(select(_owner.c.name)).scalars().first()
    url = _shown(conn.engine.url.render_as_string(hide_password=False))
    if owner is None:
        if not adopt and _revisions(conn):  # migrated by someone else since it was checked
            raise MigrationError(url, f"migrated meanwhile by another service, not {service}")
        conn.execute(insert(_owner).values(name=service))
    elif owner != service:
        raise MigrationError(url, _belongs_to(owner, service))


@dataclass(frozen=True)
class _Survey:
    tables: frozenset[str]
    owner: str | None
    revisions: frozenset[str]
    consumer_groups: frozenset[str]  # those of the services the inbox names


def _survey(conn: Connection) -> _Survey:
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
    return _Survey(tables - {_VERSION_TABLE, OWNER_TABLE}, owner, revisions, frozenset(groups))


def _revisions(conn: Connection) -> frozenset[str]:
    if not inspect(conn).has_table(_VERSION_TABLE):
        return frozenset()
    rows = conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}"))  # noqa: S608
    return frozenset(rows.scalars())


def _check_adoption(service: str, url: str, found: _Survey) -> None:
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
            raise MigrationError(_shown(url), _holds(sorted(named), service))
        return
    if looks_like(service) and named <= {service}:
        return
    others = sorted(named - {service} or {n for n in definitions if n != service and looks_like(n)})
    if others:
        raise MigrationError(_shown(url), _holds(others, service))
    revisions = ", ".join(sorted(found.revisions))
    raise MigrationError(
        _shown(url),
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
    from shared.settings import SERVICES

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
            _run_upgrade(config, revision)
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


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def is_sqlite_file(path: Path) -> bool:
    """False when `path` holds something that is not a SQLite database (none, or an empty
    file, is one SQLite makes)."""
    try:
        with path.open("rb") as file:
            head = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return True
    return not head or head == SQLITE_HEADER


def _check_sqlite_file(url: str) -> None:
    """A SQLite URL's file must be one (or not yet exist): its directory is made here."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    if path.is_dir():
        raise MigrationError(_shown(url), f"{path} is a directory, not a SQLite file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MigrationError(_shown(url), f"cannot create {path.parent}: {exc.strerror}") from exc
    try:
        sqlite = is_sqlite_file(path)
    except OSError as exc:
        raise MigrationError(_shown(url), f"cannot read {path}: {exc.strerror}") from exc
    if not sqlite:
        raise MigrationError(_shown(url), _not_sqlite(path))


def _not_sqlite(path: Path | str) -> str:
    return f"{path} is not a SQLite database (move it away, or name another file)"


@contextlib.contextmanager
def _reported(url: str) -> Iterator[None]:
    """A database that cannot be reached, or refuses us, as a `MigrationError`."""
    try:
        yield
    except Exception as exc:
        problem = next(filter(None, (_problem(url, e) for e in _causes(exc))), None)
        if problem is None:
            raise
        raise MigrationError(_shown(url), problem) from exc


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps (SQLAlchemy's around its adapter's around the driver's)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        yield current
        orig = current.orig if isinstance(current, DBAPIError) else None
        current = orig if isinstance(orig, BaseException) else current.__cause__


# asyncpg's error for several addresses that all failed has no errno.
_NETWORK_ERRORS = {
    None,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.EADDRNOTAVAIL,
}


def _problem(url: str, exc: BaseException) -> str | None:
    """What keeps us from using the database, in a few words; None for other errors."""
    parsed = make_url(url)
    where = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    name = type(exc).__name__
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {parsed.host!r} ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused at {where}"
    if isinstance(exc, TimeoutError):
        return f"no answer from {where} (timed out)"
    if isinstance(exc, ConnectionError) or (
        isinstance(exc, OSError) and exc.errno in _NETWORK_ERRORS  # not a file's error
    ):
        return f"cannot connect to {where}: {exc.strerror or exc}"
    if name == "InvalidCatalogNameError":  # asyncpg's
        return str(exc)
    if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
        return f"authentication failed for user {parsed.username!r} ({exc})"
    if name in ("CannotConnectNowError", "TooManyConnectionsError", "ConnectionRejectionError"):
        return f"{where} refused the connection: {exc}"
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
        return f"cannot open {parsed.database}: {exc}"
    if isinstance(exc, sqlite3.DatabaseError) and "file is not a database" in str(exc):
        return _not_sqlite(parsed.database or "the file")
    return None

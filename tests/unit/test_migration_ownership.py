"""A database belongs to one service: its first migration records the owner, and another
service's `migrate`, `serve` or `dev` refuses it with one line; a database migrated before
owners were recorded is adopted by its own service, and refused by the others."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from typer.testing import CliRunner, Result

from shared.alembic_commands import alembic_config
from shared.cli import app, serving
from shared.migration_errors import MigrationError
from shared.migration_ownership import OWNER_TABLE
from shared.migrations import upgrade
from shared.service_app import service_definition


@pytest.fixture(autouse=True)
def _logging_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # `serve` and `dev` configure logging for the process: under CliRunner that would bind
    # its captured stderr, closed once the command returns, and later tests would log to it
    monkeypatch.setattr(serving, "configure_logging", lambda **_: None)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def owner(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [name for (name,) in conn.execute(f"SELECT name FROM {OWNER_TABLE}")]


def revision(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def head(service: str) -> str:
    """The last revision of `service`'s migration history."""
    config = alembic_config(service_definition(service).migrations, "sqlite://")
    return str(ScriptDirectory.from_config(config).get_current_head())


def migrate_as_before(service: str, path: Path, target: str = "head") -> None:
    """Migrate as handoff did before owners were recorded (no `handoff_service`)."""
    url = f"sqlite+aiosqlite:///{path}"
    config = alembic_config(service_definition(service).migrations, url)
    command.upgrade(config, target)


def refused(result: Result, owner: str, service: str) -> str:
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: DATABASE_URL="), result.output
    assert owner in line and f"not {service}'s" in line, line
    return line


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "shared.db"
    for name in ("HANDOFF_DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HANDOFF_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    return path


def test_a_database_belongs_to_the_first_service_migrated_into_it(database: Path) -> None:
    assert invoke("migrate", "routing").exit_code == 0
    assert owner(database) == ["routing"]

    for other in ("metrics", "webhooks"):
        line = refused(invoke("migrate", other), "routing", other)
        assert str(database) in line
    assert revision(database) == head("routing")
    assert owner(database) == ["routing"]
    assert invoke("migrate", "routing").exit_code == 0  # its own service still migrates


def test_intake_refuses_qualification_s_database_before_running_anything(
    database: Path,
) -> None:
    assert invoke("migrate", "qualification").exit_code == 0

    refused(invoke("migrate", "intake"), "qualification", "intake")

    assert revision(database) == head("qualification")


def test_serve_refuses_another_service_s_database_with_or_without_migrating(
    database: Path,
) -> None:
    assert invoke("migrate", "intake").exit_code == 0

    refused(invoke("serve", "routing", "--port", "0"), "intake", "routing")
    refused(invoke("serve", "routing", "--port", "0", "--no-migrate"), "intake", "routing")


def test_a_database_from_before_owners_is_adopted_by_its_own_service(database: Path) -> None:
    migrate_as_before("intake", database, "0003")

    assert invoke("migrate", "intake").exit_code == 0

    assert owner(database) == ["intake"]
    assert revision(database) != "0003"  # the rest of intake's history, not from scratch
    refused(invoke("migrate", "routing"), "intake", "routing")


def test_a_database_from_before_owners_is_refused_by_a_service_it_does_not_match(
    database: Path,
) -> None:
    migrate_as_before("qualification", database)

    refused(invoke("migrate", "intake"), "qualification", "intake")
    refused(invoke("migrate", "routing"), "qualification", "routing")

    with sqlite3.connect(database) as conn:
        assert OWNER_TABLE not in {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    assert invoke("migrate", "qualification").exit_code == 0
    assert owner(database) == ["qualification"]


def test_intake_does_not_adopt_routing_s_database_from_before_owners(database: Path) -> None:
    migrate_as_before("routing", database)  # a revision intake's own history has too

    line = refused(invoke("migrate", "intake"), "routing", "intake")

    assert "metrics" in line and "webhooks" in line  # their schemas are routing's
    assert revision(database) == head("routing")


def test_an_inbox_naming_another_service_s_consumer_group_tells_them_apart(
    database: Path,
) -> None:
    migrate_as_before("routing", database)  # routing, metrics and webhooks look alike
    with sqlite3.connect(database) as conn:
        conn.execute(
            "INSERT INTO inbox (consumer_group, event_id, processed_at) "
            "VALUES ('handoff.metrics', 'e1', '2026-01-01')"
        )

    refused(invoke("migrate", "routing"), "metrics", "routing")
    assert invoke("migrate", "metrics").exit_code == 0
    assert owner(database) == ["metrics"]


def test_a_database_with_tables_but_no_history_is_refused(database: Path) -> None:
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY)")

    result = invoke("migrate", "routing")

    assert result.exit_code == 2, result.output
    assert "outbox" in result.output and "no migration history" in result.output


async def test_upgrade_on_service_start_checks_the_owner_too(tmp_path: Path) -> None:
    """What `serve` and `dev` call: each of dev's files (from before owners, here) is
    adopted by its own service; another service is refused."""
    urls = {}
    for name in ("intake", "routing"):
        path = tmp_path / f"{name}.db"
        await asyncio.to_thread(migrate_as_before, name, path)
        urls[name] = f"sqlite+aiosqlite:///{path}"
        await upgrade(service_definition(name).migrations, urls[name])
        assert owner(path) == [name]

    with pytest.raises(MigrationError, match="intake's database, not routing's"):
        await upgrade(service_definition("routing").migrations, urls["intake"])

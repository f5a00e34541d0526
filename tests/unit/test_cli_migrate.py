"""`handoff migrate`: each service's history into that service's database, and only there."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.cli import app


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def test_one_database_url_is_migrated_for_one_named_service_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "intake.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{database}")

    everything = CliRunner().invoke(app, ["migrate"])
    assert everything.exit_code == 2
    assert "DATABASE_URL" in everything.output and "handoff migrate" in everything.output
    assert not database.exists()  # refused before anything was written

    intake = CliRunner().invoke(app, ["migrate", "intake"])
    assert intake.exit_code == 0, intake.output
    assert {"leads", "outbox", "alembic_version"} <= tables(database)


def test_without_a_database_url_every_service_gets_its_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DATABASE_URL", "HANDOFF_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HANDOFF_DATA_DIR", str(tmp_path))

    result = CliRunner().invoke(app, ["migrate"])

    assert result.exit_code == 0, result.output
    assert "leads" in tables(tmp_path / "intake.db")
    assert "leads" not in tables(tmp_path / "routing.db")

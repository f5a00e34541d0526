"""Intake's driver SQL writes and reads what SQLAlchemy would, in the unit of work's
transaction, and fails the way SQLAlchemy fails (on SQLite, where it bypasses it); rows
staged for the commit (one statement on PostgreSQL) are written with it or not at all."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.intake.driver_sql import DriverSql
from services.intake.leads import _LEADS_BY_EMAIL
from services.intake.models import lead_external_ids, leads, metadata
from shared.bulk_writes import insert_many
from shared.db import Database
from tests.conftest import database_with

COLUMNS = (
    "id",
    "email",
    "source",
    "account_id",
    "profile",
    "field_sources",
    "created_at",
    "updated_at",
)
NOW = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
EXT = ("hubspot", "9001", "id-1")


def _row(n: int) -> tuple[Any, ...]:
    profile = {"custom": {"é": "ü", "ok": True, "n": 1.5}, "company_size": 10}
    return (f"id-{n}", f"a{n}@x.com", "marketing", None, profile, {"email": "sales"}, NOW, NOW)


@pytest.fixture
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    async with database_with(metadata, "sqlite", request, tmp_path) as database:
        yield database


async def test_rows_inserted_are_stored_as_insert_many_stores_them(db: Database) -> None:
    async with db.transaction() as session:
        sql = await DriverSql.of(session)
        assert sql._sqlite is not None  # the fast path is the one under test
        await sql.insert(leads, COLUMNS, [_row(1)])
        await insert_many(session, leads, COLUMNS, [_row(2)])
    async with db.engine.connect() as conn:
        stored = {r[0]: r[1:] for r in await conn.exec_driver_sql("SELECT * FROM leads")}
        read = {r.id: r for r in await conn.execute(select(leads))}
    assert stored["id-1"][1:] == stored["id-2"][1:]  # all but the email, byte for byte
    assert read["id-1"].profile == _row(1)[4]
    assert read["id-1"].created_at == NOW.replace(tzinfo=None)  # SQLite keeps no zone


async def test_rows_read_are_decoded_as_sqlalchemy_decodes_them(db: Database) -> None:
    async with db.transaction() as session:
        await insert_many(session, leads, COLUMNS, [_row(1), _row(2)])
    async with db.transaction() as session:
        sql = await DriverSql.of(session)
        rows = await sql.fetch(_LEADS_BY_EMAIL, [], ["a2@x.com", "a1@x.com", "none@x.com"])
        profile = sql.result(leads, "profile")
        assert profile is not None
    assert [r[0] for r in rows] == ["id-1", "id-2"]  # ordered by id
    assert [profile(r[4]) for r in rows] == [_row(1)[4], _row(2)[4]]


async def test_a_duplicate_raises_sqlalchemys_integrity_error_and_rolls_back(
    db: Database,
) -> None:
    with pytest.raises(IntegrityError):
        async with db.transaction() as session:
            sql = await DriverSql.of(session)
            await sql.insert(leads, COLUMNS, [_row(1)])
            await sql.insert(leads, COLUMNS, [_row(1)])
    async with db.engine.connect() as conn:
        assert (await conn.exec_driver_sql("SELECT count(*) FROM leads")).scalar() == 0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    async with database_with(metadata, request.param, request, tmp_path) as database:
        yield database


async def test_staged_rows_of_several_tables_are_written_by_the_commit(any_db: Database) -> None:
    async with any_db.transaction() as session:
        sql = await DriverSql.of(session)
        await sql.stage(leads, COLUMNS, [_row(1), _row(2)])
        await sql.stage(lead_external_ids, ("provider", "external_id", "lead_id"), [EXT])
    async with any_db.engine.connect() as conn:
        read = {r.id: r for r in await conn.execute(select(leads))}
        ids = (await conn.execute(select(lead_external_ids))).all()
    assert sorted(read) == ["id-1", "id-2"]
    assert read["id-2"].profile == _row(2)[4] and read["id-2"].email == "a2@x.com"
    assert read["id-1"].created_at.replace(tzinfo=None) == NOW.replace(tzinfo=None)
    assert [tuple(r) for r in ids] == [EXT]


async def test_a_staged_duplicate_fails_the_unit_of_work_with_integrity_error(
    any_db: Database,
) -> None:
    async with any_db.transaction() as session:
        await (await DriverSql.of(session)).stage(leads, COLUMNS, [_row(1)])
    with pytest.raises(IntegrityError):
        async with any_db.transaction() as session:
            sql = await DriverSql.of(session)
            await sql.stage(lead_external_ids, ("provider", "external_id", "lead_id"), [EXT])
            await sql.stage(leads, COLUMNS, [_row(1)])
    async with any_db.engine.connect() as conn:
        assert (await conn.execute(select(lead_external_ids))).all() == []  # rolled back

"""The revision that moves the outbox's headers into columns converts the rows waiting to
be published, and back: the messages made of such a row (as the relay makes them) are
those the relay published before the upgrade, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

import shared.migration_ops
from shared.alembic_commands import _ALEMBIC, alembic_config
from shared.events.codec import OutboxHeaders
from shared.migrations import upgrade
from shared.outbox_relay import CLAIMED, outbox_messages
from shared.service_app import service_definition
from tests.conftest import new_pg_database

SERVICE = "metrics"  # (every service runs the same conversion: `shared.migration_ops`)
BEFORE, AFTER = "0002", "0003"
TRACE = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"


def stored(event_id: str, subject: str, sequence: str, traceparent: str | None) -> str:
    """Headers as the outbox stored them before the revision (JSON text)."""
    pairs = [
        ["ce_specversion", "1.0"],
        ["ce_id", event_id],
        ["ce_source", f"/handoff/{SERVICE}"],
        ["ce_type", "handoff.lead.captured.v1"],
        ["ce_subject", subject],
        ["ce_time", "2026-11-24T08:00:00.250000+00:00"],
        ["ce_partitionkey", subject],
        ["ce_sequence", sequence],
        ["content-type", "application/json"],
    ]
    if traceparent:
        pairs.append(["ce_traceparent", traceparent])
    return orjson.dumps(pairs).decode()


# Rows of both kinds: PostgreSQL's placeholder sequence (sent as the row's id), and a
# number stored already (SQLite's counter; PostgreSQL rows written before ids were it).
LEGACY = [
    (10, "0192f3a4-5b6c-7d8e-9f01-23456789ab01", "lead-1", "000000000000", TRACE),
    (11, "0192f3a4-5b6c-7d8e-9f01-23456789ab02", "lead-2", "000000000007", None),
    (12, "0192f3a4-5b6c-7d8e-9f01-23456789ab03", "lead-1", "000000000000", None),
]


def published_before(row_id: int, headers: str) -> list[tuple[str, bytes]]:
    """What the relay published for a row before the revision: the stored headers, the
    placeholder sequence replaced by the row's id."""
    pairs = orjson.loads(headers)
    return [
        (name, (f"{row_id:012d}" if value == "000000000000" else value).encode())
        for name, value in pairs
    ]


async def execute(url: str, sql: str, rows: Sequence[dict[str, Any]] = ()) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(sql), list(rows) or None)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


def downgrade(url: str, revision: str) -> None:
    with _ALEMBIC:
        command.downgrade(alembic_config(service_definition(SERVICE).migrations, url), revision)


async def check_conversion(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared.migration_ops, "_OUTBOX_CHUNK", 2)  # rows across chunks
    migrations = service_definition(SERVICE).migrations
    await upgrade(migrations, url, BEFORE)
    legacy = [
        {
            "id": row_id,
            "event_id": event_id,
            "key": subject,
            "headers": stored(event_id, subject, sequence, trace),
        }
        for row_id, event_id, subject, sequence, trace in LEGACY
    ]
    await execute(
        url,
        "INSERT INTO outbox (id, event_id, topic, key, headers, value, created_at) VALUES "
        "(:id, :event_id, 'lead.events', :key, :headers, '{}', CURRENT_TIMESTAMP)",
        legacy,
    )

    await upgrade(migrations, url, AFTER)

    rows = await execute(url, f"SELECT {', '.join(CLAIMED)} FROM outbox ORDER BY id")
    messages = outbox_messages(OutboxHeaders(f"/handoff/{SERVICE}"), rows)
    assert [list(m.headers) for m in messages] == [
        published_before(row["id"], row["headers"]) for row in legacy
    ]
    assert [(r.sequence, r.traceparent) for r in rows] == [(None, TRACE), (7, None), (None, None)]

    await asyncio.to_thread(downgrade, url, BEFORE)

    back = await execute(url, "SELECT id, headers FROM outbox ORDER BY id")
    assert [tuple(r) for r in back] == [(row["id"], row["headers"]) for row in legacy]


async def test_the_outbox_rows_waiting_are_converted_on_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await check_conversion(f"sqlite+aiosqlite:///{tmp_path / 'metrics.db'}", monkeypatch)


@pytest.mark.integration
async def test_the_outbox_rows_waiting_are_converted_on_postgres(
    postgres_admin_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with new_pg_database(postgres_admin_url) as url:
        await check_conversion(url, monkeypatch)

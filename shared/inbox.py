"""Idempotent consumption: an event id is recorded per consumer group with its effect."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession


def define_inbox_table(metadata: MetaData) -> Table:
    """The inbox table, added to a service's metadata."""
    return Table(
        "inbox",
        metadata,
        Column("consumer_group", String(200), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )


class Inbox:
    """Records processed event ids in the same transaction as the handler's effect.

    A batch of ids is claimed with one statement; on PostgreSQL the ids travel as one
    array parameter (`unnest`), so the claim costs one round trip and no per-row work.
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self._claims: dict[str, Any] = {}
        self._pg_claim: str | None = None

    async def claim(
        self, session: AsyncSession, *, group: str, event_ids: Sequence[str]
    ) -> set[str]:
        """The ids among `event_ids` this group has not seen before (now recorded as seen)."""
        unique_ids = list(dict.fromkeys(event_ids))
        if not unique_ids:
            return set()
        now = datetime.now(UTC)
        dialect = session.bind.dialect
        if dialect.name == "postgresql":
            if self._pg_claim is None:
                inbox = dialect.identifier_preparer.format_table(self.table)
                self._pg_claim = (
                    f"INSERT INTO {inbox} (consumer_group, event_id, processed_at) "
                    "SELECT $1::varchar, unnest($2::varchar[]), $3::timestamptz "
                    "ON CONFLICT DO NOTHING RETURNING event_id"
                )
            conn = await session.connection()
            result = await conn.exec_driver_sql(self._pg_claim, (group, unique_ids, now))
            return set(result.scalars())
        stmt = self._claim_statement(dialect.name)
        rows = [{"consumer_group": group, "event_id": e, "processed_at": now} for e in unique_ids]
        return set((await session.execute(stmt, rows)).scalars())

    def _claim_statement(self, dialect: str) -> Any:
        # One statement object per dialect, executed with many parameter sets: SQLAlchemy
        # compiles it once and batches the rows ("insertmanyvalues").
        if dialect not in self._claims:
            insert = pg_insert if dialect == "postgresql" else sqlite_insert
            self._claims[dialect] = (
                insert(self.table).on_conflict_do_nothing().returning(self.table.c.event_id)
            )
        return self._claims[dialect]

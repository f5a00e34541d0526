"""Idempotent consumption: an event id is recorded per consumer group with its effect."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, MetaData, String, Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.bulk_writes import sqlite_rows_returning
from shared.db_drivers import PgWrite, pg_driver


def define_inbox_table(metadata: MetaData) -> Table:
    """The inbox table, added to a service's metadata."""
    return Table(
        "inbox",
        metadata,
        Column("consumer_group", String(200), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )


_UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


class Inbox:
    """Records processed event ids in the same transaction as the handler's effect.

    A batch of ids is claimed with one statement: on PostgreSQL the ids travel as one
    array parameter (`unnest`), so the claim costs one round trip and no per-row work; on
    SQLite as one multi-row VALUES text, made without compiling anything.
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self._pg_claim: str | None = None
        self._pg_record: str | None = None
        self._sqlite_claim: tuple[str, str] | None = None
        self._sqlite_time: Callable[[Any], Any] | None = None

    async def claim(
        self, session: AsyncSession, *, group: str, event_ids: Sequence[str], unseen: bool = False
    ) -> set[str]:
        """The ids among `event_ids` this group has not seen before (now recorded as seen).

        With `unseen` (PostgreSQL), the ids are taken to be new and recorded without the
        conflict check, which costs PostgreSQL about twice the work of a plain insert, and
        not now but in the unit of work's last statement (`PgDriver.write_at_commit`):
        a batch whose handlers only stage rows is then one statement in all. One recorded
        before fails that statement, and so the unit of work, with an `IntegrityError`
        that `seen_before` recognises; the caller runs its transaction again without
        `unseen`. Such ids come again only after a failure: a consumer that stopped
        between its commit and its offset commit (a crash, a rebalance), or a relay whose
        publish was stored but whose own commit failed. SQLite ignores `unseen`: its
        conflict check costs little.
        """
        unique_ids = list(dict.fromkeys(event_ids))
        if not unique_ids:
            return set()
        now = datetime.now(UTC)
        dialect = session.bind.dialect
        if dialect.name == "postgresql":
            if self._pg_claim is None or self._pg_record is None:
                inbox = dialect.identifier_preparer.format_table(self.table)
                self._pg_record = (
                    f"INSERT INTO {inbox} (consumer_group, event_id, processed_at) "
                    "SELECT $1::varchar, unnest($2::varchar[]), $3::timestamptz"
                )
                self._pg_claim = f"{self._pg_record} ON CONFLICT DO NOTHING RETURNING event_id"
            driver = await pg_driver(session)
            if unseen:
                driver.write_at_commit(PgWrite(self._pg_record, (group, unique_ids, now)))
                return set(unique_ids)
            return {row[0] for row in await driver.fetch(self._pg_claim, group, unique_ids, now)}
        if self._sqlite_claim is None:
            inbox = dialect.identifier_preparer.format_table(self.table)
            self._sqlite_claim = (
                f"INSERT INTO {inbox} (consumer_group, processed_at, event_id)",
                "ON CONFLICT DO NOTHING RETURNING event_id",
            )
            self._sqlite_time = self.table.c.processed_at.type.dialect_impl(dialect).bind_processor(
                dialect
            )
        head, tail = self._sqlite_claim
        at = self._sqlite_time(now) if self._sqlite_time else now
        rows = [(event_id,) for event_id in unique_ids]
        claimed = await sqlite_rows_returning(session, head, tail, rows, shared=(group, at))
        return {event_id for (event_id,) in claimed}

    def seen_before(self, error: BaseException) -> bool:
        """True when `error` is a unit of work failing on this inbox's key: an unchecked
        claim (`claim(unseen=True)`) met an event its group recorded before."""
        if not isinstance(error, IntegrityError):
            return False
        cause = error.orig
        if cause is None or getattr(cause, "sqlstate", None) != _UNIQUE_VIOLATION:
            return False
        constraint = getattr(cause.__cause__, "constraint_name", None)  # asyncpg's own
        key = self.table.primary_key.name
        return constraint is None or key is None or constraint == key

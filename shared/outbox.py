"""Transactional outbox: events commit with the state change; a relay publishes them
(`shared.outbox_relay`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from shared.bulk_writes import insert_many, sqlite_rows_returning
from shared.db import after_commit, before_commit
from shared.db_drivers import PgWrite, pg_driver
from shared.events.catalog import EventCatalog, EventType
from shared.events.envelope import utcnow
from shared.ids import time_ordered_event_id
from shared.observability.tracing import current_trace
from shared.outbox_sql import pg_write_sql, sqlite_reserve_sql, subject_lock_class


@dataclass(frozen=True, slots=True)
class Encoded:
    """A payload its producer has already encoded as JSON, for hot paths where building the
    model only to serialize it again costs more than the rest of the work. `model` is its
    type in the catalog. Nothing validates `data` here: the producer's tests must decode
    what it emits with `model`."""

    model: type[BaseModel]
    data: bytes


@dataclass(slots=True)  # (not frozen: made per event, and a frozen one costs ~4x as much)
class _Pending:
    event_id: str  # canonical UUID text
    payload: BaseModel | Encoded
    event_type: EventType
    subject: str
    traceparent: str | None
    time: datetime
    new_subject: bool = False


_ROW = (
    "event_id",
    "topic",
    "key",
    "event_type",
    "event_time",
    "traceparent",
    "sequence",
    "value",
    "created_at",
)


def _numbered(pending: list[_Pending], last: Mapping[str, int]) -> list[int]:
    """Each event's sequence: its subject's `last` less the subject's events here, plus its
    place among them (`last` = their counts: each event's place)."""
    counts = Counter(e.subject for e in pending)
    counters = {subject: last[subject] - n for subject, n in counts.items()}
    out = []
    for event in pending:
        counters[event.subject] += 1
        out.append(counters[event.subject])
    return out


def _columns(pending: list[_Pending], time: str, written: datetime) -> tuple[Any, ...]:
    """The outbox rows of `pending` as PostgreSQL takes them: a list per column (event id,
    topic, key, event type, traceparent, value), then the one `event_time` and the one
    `created_at` they share (the transaction's time, the flush's time). No sequence: the
    row's id is the sequence."""
    return (
        [e.event_id for e in pending],
        [e.event_type.topic for e in pending],
        [e.subject for e in pending],
        [e.event_type.name for e in pending],
        [e.traceparent for e in pending],
        [_value(e.payload) for e in pending],
        time,
        written,
    )


def _value(payload: BaseModel | Encoded) -> bytes:
    if isinstance(payload, Encoded):
        return payload.data
    # `model_dump_json`'s own JSON bytes, without the wrapper that decodes them to text
    # (~0.45 against ~0.95 µs an event)
    data: bytes = payload.__pydantic_serializer__.to_json(payload)
    return data


class Outbox:
    """Adds events to the current transaction; `OutboxRelay` ships them after commit.

    Events are buffered in the session and written just before it commits. On SQLite one
    statement numbers every subject's events (its counter) and one more inserts them all;
    a subject new in the transaction (`add`'s `new_subject`) is numbered here, its counter
    inserted rather than advanced. On PostgreSQL an event's sequence is its row's id (see
    `shared.outbox_sql`): one statement locks the subjects and inserts the rows, passed as
    arrays (`unnest`), sent with the unit of work's other deferred writes
    (`PgDriver.write_at_commit`): a transaction's events cost no round trip of their own
    and no per-row work in SQLAlchemy.
    """

    def __init__(
        self,
        *,
        service: str,
        tables: tuple[Table, Table],
        catalog: EventCatalog,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.service = service
        self.table, self.sequences = tables
        self.catalog = catalog
        self.wake = wake or asyncio.Event()
        self._key = f"handoff.outbox.{service}.{id(self)}"
        self.source = f"/handoff/{service}"  # its events' `ce_source`
        self._sqlite_reserve: tuple[str, str] | None = None
        self._pg_sql: tuple[tuple[str, ...], str] | None = None

    async def add(
        self,
        session: AsyncSession,
        payload: BaseModel | Encoded,
        *,
        subject: str,
        traceparent: str | None = None,
        new_subject: bool = False,
    ) -> str:
        """Record `payload` as an event about `subject` in the session's transaction.

        Returns the event id (canonical UUID text); the event is written when the
        transaction commits. Its `time` is when the transaction added its first event: a
        transaction's events happen together (and are stored with one `event_time`).
        `new_subject` says that no event about `subject` was written before this
        transaction (a lead it creates). On SQLite its events are then numbered from 1
        without reading a counter (its counter is inserted; a counter that exists after all
        fails the transaction on its key, an `IntegrityError`, which `Database.run` takes
        for a race and runs again: say it only of subjects the transaction creates). On
        PostgreSQL, which numbers events by their ids, it changes nothing.
        """
        # an unknown type fails here
        if isinstance(payload, Encoded):
            event_type = self.catalog.for_payload_type(payload.model)
        else:
            event_type = self.catalog.for_payload(payload)
        pending: list[_Pending] | None = session.info.get(self._key)
        if pending is None:
            pending = session.info[self._key] = []
            before_commit(session, self._flush)
            after_commit(session, self.wake.set)
        event = _Pending(
            time_ordered_event_id(),
            payload,
            event_type,
            subject,
            traceparent or current_trace(),
            pending[0].time if pending else utcnow(),  # a transaction's events: one time
            new_subject,
        )
        pending.append(event)
        return event.event_id

    async def _flush(self, session: AsyncSession) -> None:
        pending: list[_Pending] = session.info.pop(self._key, [])
        if not pending:
            return
        time = pending[0].time.isoformat()  # (a transaction's events share one time: `add`)
        if session.bind.dialect.name == "postgresql":
            await self._flush_postgres(session, pending, time)
            return
        counts = Counter(e.subject for e in pending)
        new = {e.subject for e in pending if e.new_subject}
        last = await self._reserve_sequences(
            session, Counter({s: n for s, n in counts.items() if s not in new})
        )
        if new:  # numbered from 1: their counters are inserted, not read
            fresh = [(s, counts[s]) for s in new]
            await insert_many(session, self.sequences, ("subject", "last"), fresh)
            last.update(fresh)
        written = utcnow()  # (one value: converted for SQLite once, not per row)
        rows = [
            (
                event.event_id,
                event.event_type.topic,
                event.subject,
                event.event_type.name,
                time,
                event.traceparent,
                sequence,
                _value(event.payload),
                written,
            )
            for event, sequence in zip(pending, _numbered(pending, last), strict=True)
        ]
        await insert_many(session, self.table, _ROW, rows)

    async def _flush_postgres(
        self, session: AsyncSession, pending: list[_Pending], time: str
    ) -> None:
        """One write whatever the number of events, their rows passed as arrays: it locks
        their subjects and inserts them, each numbered by its row's id (its `sequence` left
        NULL: the relay sends the id)."""
        driver = await pg_driver(session)
        ctes, statement = self._postgres_statement(session)
        subjects = list(dict.fromkeys(e.subject for e in pending))
        args = (*_columns(pending, time, utcnow()), subjects)
        driver.write_at_commit(PgWrite(statement, args, ctes))

    def _postgres_statement(self, session: AsyncSession) -> tuple[tuple[str, ...], str]:
        if self._pg_sql is None:
            quote = session.bind.dialect.identifier_preparer
            self._pg_sql = pg_write_sql(quote, self.table, subject_lock_class(self.service))
        return self._pg_sql

    async def _reserve_sequences(
        self, session: AsyncSession, counts: Counter[str]
    ) -> dict[str, int]:
        """Atomically advance each subject's counter; returns the new last value per subject
        (SQLite: PostgreSQL does this inside its one statement)."""
        if self._sqlite_reserve is None:
            quote = session.bind.dialect.identifier_preparer
            self._sqlite_reserve = sqlite_reserve_sql(quote, self.sequences)
        head, tail = self._sqlite_reserve
        if not counts:
            return {}
        rows = sorted(counts.items())
        return {s: int(last) for s, last in await sqlite_rows_returning(session, head, tail, rows)}

"""Transactional outbox: events commit with the state change; a relay publishes them."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from pydantic import BaseModel
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, wait_exponential_jitter

from shared.bus.port import Bus, OutgoingMessage
from shared.db import Database, after_commit, before_commit
from shared.events.catalog import EventCatalog
from shared.events.codec import header_pairs
from shared.events.envelope import new_event_id, utcnow
from shared.observability import metrics
from shared.observability.tracing import current_traceparent

log = structlog.get_logger(__name__)


def define_outbox_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The outbox and per-subject sequence tables, added to a service's metadata."""
    outbox = Table(
        "outbox",
        metadata,
        Column(
            "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        Column("event_id", String(36), nullable=False, unique=True),
        Column("topic", String(200), nullable=False),
        Column("key", String(200), nullable=False),
        Column("headers", Text, nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    sequences = Table(
        "event_sequences",
        metadata,
        Column("subject", String(200), primary_key=True),
        Column("last", BigInteger, nullable=False),
    )
    return outbox, sequences


@dataclass(frozen=True, slots=True)
class _Pending:
    event_id: uuid.UUID
    payload: BaseModel
    subject: str
    traceparent: str | None
    time: datetime


class Outbox:
    """Adds events to the current transaction; `OutboxRelay` ships them after commit.

    Events are buffered in the session and written just before it commits: one statement
    numbers every subject's events, one more inserts them all.
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
        self._reserve: dict[str, Any] = {}

    async def add(
        self,
        session: AsyncSession,
        payload: BaseModel,
        *,
        subject: str,
        traceparent: str | None = None,
    ) -> uuid.UUID:
        """Record `payload` as an event about `subject` in the session's transaction.

        Returns the event id; the event is written when the transaction commits.
        """
        self.catalog.for_payload(payload)  # an unknown type fails here, not at commit
        pending: list[_Pending] | None = session.info.get(self._key)
        if pending is None:
            pending = session.info[self._key] = []
            before_commit(session, self._flush)
            after_commit(session, self.wake.set)
        event = _Pending(
            new_event_id(), payload, subject, traceparent or current_traceparent.get(), utcnow()
        )
        pending.append(event)
        return event.event_id

    async def _flush(self, session: AsyncSession) -> None:
        pending: list[_Pending] = session.info.pop(self._key, [])
        if not pending:
            return
        last = await self._reserve_sequences(session, Counter(e.subject for e in pending))
        counters = {
            subject: last[subject] - n for subject, n in Counter(e.subject for e in pending).items()
        }
        rows = []
        source = f"/handoff/{self.service}"
        for event in pending:  # straight to the wire format: this is the hot path
            counters[event.subject] += 1
            event_type = self.catalog.for_payload(event.payload)
            headers = header_pairs(
                event_id=event.event_id,
                source=source,
                event_type=event_type.name,
                subject=event.subject,
                time=event.time,
                sequence=counters[event.subject],
                traceparent=event.traceparent,
            )
            rows.append(
                {
                    "event_id": str(event.event_id),
                    "topic": event_type.topic,
                    "key": event.subject,
                    "headers": orjson.dumps(headers).decode(),
                    "value": event.payload.model_dump_json().encode(),
                    "created_at": event.time,
                }
            )
        await session.execute(insert(self.table), rows)

    async def _reserve_sequences(
        self, session: AsyncSession, counts: Counter[str]
    ) -> dict[str, int]:
        """Atomically advance each subject's counter; returns the new last value per subject."""
        stmt = self._reserve_statement(session.bind.dialect.name)
        rows = [{"subject": subject, "last": n} for subject, n in sorted(counts.items())]
        return {subject: int(last) for subject, last in await session.execute(stmt, rows)}

    def _reserve_statement(self, dialect: str) -> Any:
        # Built once per dialect and run with many parameter sets (compiled once, batched).
        if dialect not in self._reserve:
            insert_for = pg_insert if dialect == "postgresql" else sqlite_insert
            values = insert_for(self.sequences)
            self._reserve[dialect] = values.on_conflict_do_update(
                index_elements=[self.sequences.c.subject],
                set_={"last": self.sequences.c.last + values.excluded.last},
            ).returning(self.sequences.c.subject, self.sequences.c.last)
        return self._reserve[dialect]


class OutboxRelay:
    """Publishes committed outbox rows in order, then deletes them.

    Several relays may run against one PostgreSQL database: a transaction-scoped advisory
    lock lets one publish at a time (keeping per-lead order) and the rows are claimed with
    `FOR UPDATE SKIP LOCKED`. It sleeps until a commit wakes it, with a slow safety poll.
    """

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        bus: Bus,
        batch_size: int = 500,
        idle_poll: float = 2.0,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.bus = bus
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self._stopping = False
        self._lock_id = _advisory_lock_id(outbox.service)

    async def run(self) -> None:
        """Relay until `stop()`; failures are logged and retried with backoff."""
        while not self._stopping:
            self.outbox.wake.clear()  # before reading: a commit from now on wakes us again
            try:
                published = await self._relay_with_retry()
            except RetryError:
                return  # stopped while retrying
            if published < self.batch_size and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.outbox.wake.wait(), timeout=self.idle_poll)

    async def _relay_with_retry(self) -> int:
        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=0.1, max=5),
            retry=retry_if_exception_type(Exception),
            stop=lambda _state: self._stopping,
        ):
            with attempt:
                try:
                    return await self.relay_once()
                except Exception:
                    log.exception("outbox relay failed; retrying", service=self.outbox.service)
                    raise
        raise AssertionError("unreachable: tenacity retries forever")

    async def relay_once(self) -> int:
        """Publish one batch; returns how many events went out."""
        async with self.db.transaction() as session:
            if self.db.is_postgres:
                got = await session.execute(
                    text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": self._lock_id}
                )
                if not got.scalar_one():
                    return 0
            rows = await self._claim(session)
            if not rows:
                return 0
            await self.bus.publish(
                [
                    OutgoingMessage(
                        topic=r.topic, key=r.key, value=r.value, headers=_load_headers(r.headers)
                    )
                    for r in rows
                ]
            )
            await session.execute(
                delete(self.outbox.table).where(self.outbox.table.c.id.in_([r.id for r in rows]))
            )
        metrics.OUTBOX_PUBLISHED.labels(self.outbox.service).inc(len(rows))
        return len(rows)

    async def _claim(self, session: AsyncSession) -> Sequence[Any]:
        table = self.outbox.table
        stmt = select(table).order_by(table.c.id).limit(self.batch_size)
        if self.db.is_postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        return (await session.execute(stmt)).all()

    async def backlog(self) -> tuple[int, float]:
        """How many events wait in the outbox and the age in seconds of the oldest."""
        table = self.outbox.table
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(func.count(), func.min(table.c.created_at)))).one()
        count, oldest = int(row[0]), row[1]
        if oldest is None:
            return count, 0.0
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return count, max(0.0, (datetime.now(UTC) - oldest).total_seconds())

    def stop(self) -> None:
        self._stopping = True
        self.outbox.wake.set()


def _load_headers(raw: str) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in orjson.loads(raw)]


def _advisory_lock_id(service: str) -> int:
    import zlib

    return zlib.crc32(f"handoff.outbox.{service}".encode())

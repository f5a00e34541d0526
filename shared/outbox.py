"""Transactional outbox: events commit with the state change; a relay publishes them."""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

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
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, wait_exponential_jitter

from shared.bus.port import Bus, OutgoingMessage, StoredHeaders
from shared.db import (
    Database,
    PgWrite,
    after_commit,
    before_commit,
    insert_many,
    pg_driver,
    sqlite_driver,
    sqlite_rows_returning,
)
from shared.events.catalog import EventCatalog, EventType
from shared.events.codec import SEQUENCE_DIGITS, headers_json, sequence_text
from shared.events.envelope import utcnow
from shared.ids import time_ordered_event_id
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
        Column("event_id", String(36), nullable=False),
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
class Encoded:
    """A payload its producer has already encoded as JSON, for hot paths where building the
    model only to serialize it again costs more than the rest of the work. `model` is its
    type in the catalog. Nothing validates `data` here: the producer's tests must decode
    what it emits with `model`."""

    model: type[BaseModel]
    data: bytes


@runtime_checkable
class PipeliningBus(Protocol):
    """A bus that takes messages in order now and confirms their storage later."""

    async def enqueue(
        self, messages: Sequence[OutgoingMessage], *, after: Awaitable[None] | None = None
    ) -> Awaitable[None]:
        """`after`: what this caller's previous `enqueue` returned, when these messages
        must follow those; if the bus cannot keep them in that order any more, it raises
        `BusError` and the caller publishes all of them again."""


@dataclass(frozen=True, slots=True)
class _Pending:
    event_id: str  # canonical UUID text
    payload: BaseModel | Encoded
    event_type: EventType
    subject: str
    traceparent: str | None
    time: datetime
    new_subject: bool = False


_ROW = ("event_id", "topic", "key", "headers", "value", "created_at")
# The stored form of a `ce_sequence` header of 0, which PostgreSQL's flush numbers in SQL.
_SEQUENCE_PLACEHOLDER = f'["ce_sequence","{sequence_text(0)}"]'


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


def _columns(
    pending: list[_Pending], ids: list[str], headers: list[str], written: datetime
) -> tuple[list[Any], ...]:
    """The outbox rows of `pending` as PostgreSQL takes them: a list per column of `_ROW`."""
    return (
        ids,
        [e.event_type.topic for e in pending],
        [e.subject for e in pending],
        headers,
        [_value(e.payload) for e in pending],
        [written] * len(pending),
    )


def _value(payload: BaseModel | Encoded) -> bytes:
    return payload.data if isinstance(payload, Encoded) else payload.model_dump_json().encode()


class Outbox:
    """Adds events to the current transaction; `OutboxRelay` ships them after commit.

    Events are buffered in the session and written just before it commits. On SQLite one
    statement numbers every subject's events and one more inserts them all. On PostgreSQL
    the numbering and the inserts are parts of one statement, its rows as arrays
    (`unnest`), sent with the unit of work's other deferred writes
    (`PgDriver.write_at_commit`): a transaction's events cost no round trip of their own
    and no per-row work in SQLAlchemy. A subject new in the transaction (`add`'s
    `new_subject`) is numbered here, its counter inserted rather than advanced.
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
        self._source = f"/handoff/{service}"
        self._sqlite_reserve: tuple[str, str] | None = None
        self._pg_sql: tuple[tuple[str, ...], str] | None = None
        self._pg_fresh_sql: tuple[tuple[str, ...], str] | None = None

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
        transaction's events happen together (and their headers are written with one
        timestamp). `new_subject` says that no event about `subject` was written before
        this transaction (a lead it creates): its events are numbered from 1 without
        reading a counter (its counter is inserted; a counter that exists after all fails
        the transaction on its key, an `IntegrityError`, which `Database.run` takes for a
        race and runs again: say it only of subjects the transaction creates).
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
            traceparent or current_traceparent.get(),
            pending[0].time if pending else utcnow(),  # a transaction's events: one time
            new_subject,
        )
        pending.append(event)
        return event.event_id

    async def _flush(self, session: AsyncSession) -> None:
        pending: list[_Pending] = session.info.pop(self._key, [])
        if not pending:
            return
        counts = Counter(e.subject for e in pending)
        if session.bind.dialect.name == "postgresql":
            await self._flush_postgres(session, pending, counts)
            return
        new = {e.subject for e in pending if e.new_subject}
        last = await self._reserve_sequences(
            session, Counter({s: n for s, n in counts.items() if s not in new})
        )
        if new:  # numbered from 1: their counters are inserted, not read
            fresh = [(s, counts[s]) for s in new]
            await insert_many(session, self.sequences, ("subject", "last"), fresh)
            last.update(fresh)
        ids = [event.event_id for event in pending]
        written = utcnow()  # (one value: converted for SQLite once, not per row)
        rows = [
            (
                event_id,
                event.event_type.topic,
                event.subject,
                headers,
                _value(event.payload),
                written,
            )
            for event, event_id, headers in zip(
                pending, ids, self._headers(pending, ids, _numbered(pending, last)), strict=True
            )
        ]
        await insert_many(session, self.table, _ROW, rows)

    async def _flush_postgres(
        self, session: AsyncSession, pending: list[_Pending], counts: Counter[str]
    ) -> None:
        """One write whatever the number of events, their rows passed as arrays: it
        advances each existing subject's counter by its count of events and inserts the
        events numbered from it, each by its place among its subject's events here (the
        stored headers carry a placeholder sequence that the statement fills in); the
        events of new subjects go in a part of their own (`_fresh_write`)."""
        driver = await pg_driver(session)
        written = utcnow()  # created_at: when the flush wrote them, as on SQLite
        if new := {e.subject for e in pending if e.new_subject}:
            fresh = [e for e in pending if e.subject in new]
            driver.write_at_commit(self._fresh_write(session, fresh, written))
            pending = [e for e in pending if e.subject not in new]
            if not pending:
                return
            counts = Counter(e.subject for e in pending)
        ids = [e.event_id for e in pending]
        # placeholder sequences (_SEQUENCE_PLACEHOLDER), which the statement replaces
        headers = self._headers(pending, ids, [0] * len(pending))
        subjects = sorted(counts)
        ordinals = _numbered(pending, counts)  # each event's place among its subject's here
        ctes, statement = self._postgres_statement(session)
        args = (
            *_columns(pending, ids, headers, written),
            subjects,
            [counts[s] for s in subjects],
            ordinals,
        )
        driver.write_at_commit(PgWrite(statement, args, ctes))

    def _fresh_write(
        self, session: AsyncSession, pending: list[_Pending], written: datetime
    ) -> PgWrite:
        """The events of subjects new in this transaction, numbered from 1 here, and their
        counters: two plain inserts (no counter to read or lock; about half the database's
        work of the other statement, which a capture of new leads mostly is)."""
        ids = [e.event_id for e in pending]
        counts = Counter(e.subject for e in pending)
        headers = self._headers(pending, ids, _numbered(pending, counts))  # (from 1)
        subjects = list(counts)
        if self._pg_fresh_sql is None:
            quote = session.bind.dialect.identifier_preparer
            seq, out = quote.format_table(self.sequences), quote.format_table(self.table)
            counters = quote.quote(f"{self.table.name}_new_counters")
            # Only our own quoted table names are interpolated; the data are parameters.
            self._pg_fresh_sql = (
                (
                    f"{counters} AS (INSERT INTO {seq} (subject, last) "  # noqa: S608
                    "SELECT * FROM unnest($7::varchar[], $8::bigint[]))",
                ),
                f"INSERT INTO {out} (event_id, topic, key, headers, value, created_at) "  # noqa: S608
                "SELECT e.event_id, e.topic, e.key, e.headers, e.value, e.created_at "
                "FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::text[], "
                "$5::bytea[], $6::timestamptz[]) WITH ORDINALITY "
                "AS e(event_id, topic, key, headers, value, created_at, ord) ORDER BY e.ord",
            )
        ctes, statement = self._pg_fresh_sql
        args = (*_columns(pending, ids, headers, written), subjects, [counts[s] for s in subjects])
        return PgWrite(statement, args, ctes)

    def _headers(self, pending: list[_Pending], ids: list[str], sequences: list[int]) -> list[str]:
        """Each event's `ce_*` headers as stored (JSON text, straight to the wire format)."""
        time = pending[0].time.isoformat()  # (a transaction's events share one time: `add`)
        source = self._source
        return [
            headers_json(
                event_id=event_id,
                source=source,
                event_type=event.event_type.name,
                subject=event.subject,
                time=time,
                sequence=sequence,
                traceparent=event.traceparent,
            )
            for event, event_id, sequence in zip(pending, ids, sequences, strict=True)
        ]

    def _postgres_statement(self, session: AsyncSession) -> tuple[tuple[str, ...], str]:
        # Plain SQL for the driver (asyncpg's $n parameters): nothing for SQLAlchemy to
        # compile or to process per row; asyncpg encodes the arrays. Subjects are locked
        # in a fixed order (concurrent writers cannot deadlock); the sort before the insert
        # makes every counter advance before any row takes its id, in the events' order.
        # Sent with the unit of work's other writes (`PgDriver.write_at_commit`): its
        # `WITH` parts are named for its table.
        if self._pg_sql is None:
            quote = session.bind.dialect.identifier_preparer
            seq, out = quote.format_table(self.sequences), quote.format_table(self.table)
            name = self.table.name
            counts, reserved = quote.quote(f"{name}_counts"), quote.quote(f"{name}_reserved")
            # Only our own quoted table names are interpolated; the data are parameters.
            ctes = (
                f"{counts} AS (SELECT * FROM unnest($7::varchar[], $8::bigint[]) "  # noqa: S608
                "AS c(key, n))",
                f"{reserved} AS (INSERT INTO {seq} (subject, last) "  # noqa: S608
                f"SELECT key, n FROM {counts} ORDER BY key "
                f"ON CONFLICT (subject) DO UPDATE SET last = {seq}.last + excluded.last "
                "RETURNING subject, last)",
            )
            statement = (
                f"INSERT INTO {out} (event_id, topic, key, headers, value, created_at) "  # noqa: S608
                "SELECT e.event_id, e.topic, e.key, "
                f"replace(e.headers, '{_SEQUENCE_PLACEHOLDER}', "
                '\'["ce_sequence","\' || lpad((r.last - c.n + e.k)::text, '
                f"greatest({SEQUENCE_DIGITS}, length((r.last - c.n + e.k)::text)), '0') "
                "|| '\"]'), "
                "e.value, e.created_at "
                "FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::text[], "
                "$5::bytea[], $6::timestamptz[], $9::bigint[]) WITH ORDINALITY "
                "AS e(event_id, topic, key, headers, value, created_at, k, ord) "
                f"JOIN {counts} c ON c.key = e.key "
                f"JOIN {reserved} r ON r.subject = e.key "
                "ORDER BY e.ord"
            )
            self._pg_sql = (ctes, statement)
        return self._pg_sql

    async def _reserve_sequences(
        self, session: AsyncSession, counts: Counter[str]
    ) -> dict[str, int]:
        """Atomically advance each subject's counter; returns the new last value per subject
        (SQLite: PostgreSQL does this inside its one statement)."""
        if self._sqlite_reserve is None:
            seq = session.bind.dialect.identifier_preparer.format_table(self.sequences)
            self._sqlite_reserve = (
                f"INSERT INTO {seq} (subject, last)",
                f"ON CONFLICT (subject) DO UPDATE SET last = {seq}.last + excluded.last "
                "RETURNING subject, last",
            )
        head, tail = self._sqlite_reserve
        if not counts:
            return {}
        rows = sorted(counts.items())
        return {s: int(last) for s, last in await sqlite_rows_returning(session, head, tail, rows)}


class OutboxRelay:
    """Publishes committed outbox rows in order and removes them once they are published.

    One statement claims a batch: it deletes the oldest rows (`FOR UPDATE SKIP LOCKED` on
    PostgreSQL) and returns them; the transaction commits only after the bus has stored
    every message, so a failed publish rolls the delete back and the rows go out again.
    Several relays may run against one PostgreSQL database: a transaction-scoped advisory
    lock lets one publish at a time (keeping per-lead order); one that finds another
    publishing tries again `LOCK_RETRY_S` later, then less and less often. It sleeps until
    a commit wakes it, with a slow safety poll.

    Under load it lingers, as a Kafka producer does: after a cycle that published, the
    next starts no sooner than `linger` seconds after it began, so the events of every
    commit meanwhile go out in one claim and one publish rather than a cycle each. A
    relay cycle costs far more than its claim and publish statements (two commits, the
    log's pages written again; on SQLite webhooks ~11% of the requests served, at ~100
    cycles a second against ~50 with 20 ms). After a cycle that found nothing, a commit
    is relayed at once: a lone event does not wait.

    On a bus that can enqueue (Kafka), a transaction claims up to `pipeline` batches, each
    while the broker is still storing the previous ones, and commits once all are stored.
    """

    def __init__(
        self,
        *,
        db: Database,
        outbox: Outbox,
        bus: Bus,
        batch_size: int = 500,
        idle_poll: float = 2.0,
        pipeline: int = 4,
        linger: float = 0.0,
    ) -> None:
        self.db = db
        self.outbox = outbox
        self.bus = bus
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self.pipeline = max(1, pipeline)
        self.linger = max(0.0, linger)
        self._stopping = asyncio.Event()
        self._lock_id = _advisory_lock_id(outbox.service)
        self._lock_busy = False  # the last claim found another relay publishing
        table = outbox.table
        oldest = select(table.c.id).order_by(table.c.id).limit(batch_size)
        # Built once: SQLAlchemy compiles it once (an IN list of ids would be re-rendered for
        # every batch). FOR UPDATE renders as nothing on SQLite, whose writers take turns.
        self._take_sql: tuple[str, str] | None = None  # (SQLite, PostgreSQL)
        self._take = (
            delete(table)
            .where(table.c.id.in_(oldest.with_for_update(skip_locked=True).scalar_subquery()))
            .returning(table.c.id, table.c.topic, table.c.key, table.c.headers, table.c.value)
        )

    async def run(self) -> None:
        """Relay until `stop()`; failures are logged and retried with backoff."""
        loop = asyncio.get_running_loop()
        busy_for = 0.0  # how long it last waited for another relay (doubling, at most idle_poll)
        while not self._stopping.is_set():
            began = loop.time()
            self.outbox.wake.clear()  # before reading: a commit from now on wakes us again
            try:
                published = await self._relay_with_retry()
            except RetryError:
                return  # stopped while retrying
            if self._lock_busy and not self._stopping.is_set():
                # another relay is publishing: ours may be behind it
                busy_for = min(busy_for * 2, self.idle_poll) if busy_for else LOCK_RETRY_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=busy_for)
                continue
            busy_for = 0.0
            if published >= self.batch_size or self._stopping.is_set():
                continue  # a backlog: on at once
            if published and self.linger:  # let the next commits' events gather
                with contextlib.suppress(TimeoutError):
                    lingering = began + self.linger - loop.time()
                    await asyncio.wait_for(self._stopping.wait(), timeout=lingering)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.outbox.wake.wait(), timeout=self.idle_poll)

    async def _relay_with_retry(self) -> int:
        async for attempt in AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=0.1, max=5),
            retry=retry_if_exception_type(Exception),
            stop=lambda _state: self._stopping.is_set(),
        ):
            with attempt:
                try:
                    return await self.relay_once()
                except Exception:
                    log.exception("outbox relay failed; retrying", service=self.outbox.service)
                    raise
        raise AssertionError("unreachable: tenacity retries forever")

    async def relay_once(self) -> int:
        """Publish one batch (on a pipelining bus, up to `pipeline` batches); returns how
        many events went out."""
        enqueue = self.bus.enqueue if isinstance(self.bus, PipeliningBus) else None
        total = 0
        stored: list[Awaitable[None]] = []
        async with self.db.transaction() as session:
            self._lock_busy = False
            if self.db.is_postgres:
                (locked,) = await (await pg_driver(session)).fetch(_TRY_LOCK, self._lock_id)
                if not locked[0]:
                    self._lock_busy = True
                    return 0
            try:
                for _ in range(self.pipeline if enqueue else 1):
                    rows = sorted(await self._claim(session), key=_row_id)
                    if not rows:
                        break
                    messages = [
                        OutgoingMessage(topic, key, value, StoredHeaders(headers))
                        for _id, topic, key, headers, value in rows
                    ]
                    if enqueue is None:
                        await self.bus.publish(messages)
                    else:  # claim the next batch while the broker stores this one
                        after = stored[-1] if stored else None
                        stored.append(await enqueue(messages, after=after))
                    total += len(rows)
                    if len(rows) < self.batch_size:
                        break
            finally:
                # every enqueued batch is stored (or has failed) before the claims commit
                outcomes = await asyncio.gather(*stored, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        if total:
            metrics.OUTBOX_PUBLISHED.labels(self.outbox.service).inc(total)
        return total

    async def _claim(self, session: AsyncSession) -> Sequence[Any]:
        """Delete the oldest rows no other relay holds and return them (in any order)."""
        sqlite_take, pg_take = self._claim_statements(session)
        if self.db.is_postgres:
            return await (await pg_driver(session)).fetch(pg_take, self.batch_size)
        inline = await sqlite_driver(session)
        if inline is None:  # (SQLite through another driver)
            return (await session.execute(self._take)).all()
        return inline.fetch(sqlite_take, (self.batch_size,))

    def _claim_statements(self, session: AsyncSession) -> tuple[str, str]:
        """The claim as plain SQL for SQLite (whose writers take turns) and PostgreSQL."""
        if self._take_sql is None:
            table = session.bind.dialect.identifier_preparer.format_table(self.outbox.table)
            returning = "RETURNING id, topic, key, headers, value"
            # PostgreSQL: the ids are an array computed once (an InitPlan) before any row is
            # deleted: as `IN (subquery)` the planner may run the locking subquery again for
            # every row it scans (a nested loop), which on a large backlog never finishes.
            # The limit is a parameter: PostgreSQL plans a statement without parameters
            # once, whatever `plan_cache_mode` says (see `_TRY_LOCK`).
            self._take_sql = (
                f"DELETE FROM {table} WHERE id IN ("  # noqa: S608 (our table)
                f"SELECT id FROM {table} ORDER BY id LIMIT ?) {returning}",
                f"DELETE FROM {table} WHERE id = ANY(ARRAY("  # noqa: S608 (our table)
                f"SELECT id FROM {table} ORDER BY id LIMIT $1 "
                f"FOR UPDATE SKIP LOCKED)) {returning}",
            )
        return self._take_sql

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
        self._stopping.set()
        self.outbox.wake.set()


# How soon a relay that found another one publishing tries again (then twice as long each
# time, up to its idle poll: a relay stuck publishing to a broker that is away is not polled
# twenty times a second): its own process's commits may be waiting, and no commit of
# theirs will wake it (one did already).
LOCK_RETRY_S = 0.05

# The lock, and fresh plans for this transaction's claims. The outbox is a queue, mostly
# empty: a plan cached while it was (PostgreSQL keeps a generic plan after five executions)
# finds the claimed ids by scanning the whole table, dead rows included, and a backlog
# then makes every claim slower the longer it grows. A plan made for each claim sees the
# table's current size and finds them through the primary key.
_TRY_LOCK = (
    "SELECT pg_try_advisory_xact_lock($1), set_config('plan_cache_mode', 'force_custom_plan', true)"
)
_row_id = operator.itemgetter(0)


def _advisory_lock_id(service: str) -> int:
    import zlib

    return zlib.crc32(f"handoff.outbox.{service}".encode())

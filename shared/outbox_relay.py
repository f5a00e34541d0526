"""The outbox relay: publishes committed outbox rows in order, then removes them."""

from __future__ import annotations

import asyncio
import contextlib
import operator
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, wait_exponential_jitter

from shared.bus.port import Bus, OutgoingMessage
from shared.db import Database
from shared.db_drivers import pg_driver, sqlite_driver
from shared.events.codec import OutboxHeaders
from shared.observability import metrics
from shared.outbox import Outbox

log = structlog.get_logger(__name__)


@runtime_checkable
class PipeliningBus(Protocol):
    """A bus that takes messages in order now and confirms their storage later."""

    async def enqueue(
        self, messages: Sequence[OutgoingMessage], *, after: Awaitable[None] | None = None
    ) -> Awaitable[None]:
        """`after`: what this caller's previous `enqueue` returned, when these messages
        must follow those; if the bus cannot keep them in that order any more, it raises
        `BusError` and the caller publishes all of them again."""


class OutboxRelay:
    """Publishes committed outbox rows in order and removes them once they are published.
    An event's `ce_*` headers are made here from its row's columns (on PostgreSQL its
    `ce_sequence` is the row's id: `shared.outbox_sql`).

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
        self._headers = OutboxHeaders(outbox.source)
        table = outbox.table
        oldest = select(table.c.id).order_by(table.c.id).limit(batch_size)
        # Built once: SQLAlchemy compiles it once (an IN list of ids would be re-rendered for
        # every batch). FOR UPDATE renders as nothing on SQLite, whose writers take turns.
        self._take_sql: tuple[str, str] | None = None  # (SQLite, PostgreSQL)
        self._take = (
            delete(table)
            .where(table.c.id.in_(oldest.with_for_update(skip_locked=True).scalar_subquery()))
            .returning(*(table.c[name] for name in CLAIMED))
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
                    messages = outbox_messages(self._headers, rows)
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
            returning = f"RETURNING {', '.join(CLAIMED)}"
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
# What a claim returns of each row, in this order: what its message is made of.
CLAIMED = (
    "id",
    "topic",
    "key",
    "event_id",
    "event_type",
    "event_time",
    "traceparent",
    "sequence",
    "value",
)


def _advisory_lock_id(service: str) -> int:
    import zlib

    return zlib.crc32(f"handoff.outbox.{service}".encode())


def outbox_messages(headers: OutboxHeaders, rows: Sequence[Any]) -> list[OutgoingMessage]:
    """Outbox rows (their `CLAIMED` columns) as the messages the relay publishes: each
    event's headers made from its columns, its `ce_sequence` the row's `sequence` or, where
    that is NULL (PostgreSQL's), the row's id."""
    make = headers.pairs
    return [
        OutgoingMessage(
            topic,
            key,
            value,
            make(event_id, event_type, key, time, row_id if sequence is None else sequence, trace),
        )
        for row_id, topic, key, event_id, event_type, time, trace, sequence, value in rows
    ]

"""Event consumption with exactly-once effects: bus -> inbox + handler in one transaction.

A batch is applied in one database transaction (inbox rows and handler effects together),
then the offsets are committed. A handler error rolls the batch back and the events are
retried one by one, so one poison event goes to the group's dead-letter topic (with the
error) while the others are applied. A crash anywhere before the offset commit means
redelivery, and the inbox drops what was already applied.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.bus.port import Bus, Record, Subscription
from shared.consumer_lag import LagGauges
from shared.database_trouble import database_trouble
from shared.db import Database
from shared.dead_letters import dead_letter
from shared.events.catalog import EventCatalog, UnknownEventType, dead_letter_topic
from shared.events.codec import MalformedEvent, decode_payload, from_binary
from shared.events.envelope import Envelope
from shared.handler_context import Batched, Delivery, Handler, HandlerContext, Handlers
from shared.inbox import Inbox
from shared.observability import metrics
from shared.observability.logging import reset_event_context, set_event_context
from shared.observability.tracing import Span, current_traceparent, trace_id_of
from shared.outbox import Outbox

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Decoded:
    record: Record
    envelope: Envelope | None = None
    payload: BaseModel | None = None
    error: str | None = None

    @property
    def event_id(self) -> str:
        return self.envelope.id if self.envelope is not None else ""


@dataclass
class ConsumerHooks:
    """Seams for observing (and, in tests, interrupting) the commit sequence."""

    after_db_commit: Callable[[Sequence[Record]], Awaitable[None]] | None = None
    after_offset_commit: Callable[[Sequence[Record]], Awaitable[None]] | None = None
    on_duplicate: Callable[[Envelope], Awaitable[None]] | None = None


class EventConsumer:
    """Runs one consumer-group member: poll, apply idempotently, commit offsets."""

    def __init__(
        self,
        *,
        service: str,
        group: str,
        bus: Bus,
        db: Database,
        inbox: Inbox,
        catalog: EventCatalog,
        handlers: Handlers,
        topics: Sequence[str] | None = None,
        outbox: Outbox | None = None,
        batch_size: int = 500,
        max_attempts: int = 3,
        hooks: ConsumerHooks | None = None,
    ) -> None:
        self.service = service
        self.group = group
        self.bus = bus
        self.db = db
        self.inbox = inbox
        self.catalog = catalog
        self.handlers = handlers
        self.topics = tuple(topics or sorted({catalog.for_payload_type(m).topic for m in handlers}))
        self.outbox = outbox
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.hooks = hooks or ConsumerHooks()
        self._in_flight = asyncio.Lock()
        self._committing: asyncio.Task[None] | None = None  # the last batch's offset commit
        self._stopping = asyncio.Event()
        self._subscription: Subscription | None = None
        self._lag = LagGauges(service, group)

    async def run(self) -> None:
        """Consume until `stop()`; returns after the last batch is committed.

        A batch's offsets are committed once its transaction has committed; the commit
        runs while the next batch is applied, and the one after that waits for it, so
        offsets are committed in order and a rebalance or `stop()` waits for both.

        The lag of each partition is exported (every 5 s) as soon as it is polled, before
        its records are applied, and stays exported after a failed run: while the database
        is down, the restarted runs keep showing it grow. It goes when the partition is
        revoked, when a restarted run cannot join the group, or when the consumer stops.
        """
        subscription = await self._subscribe()
        self._subscription = subscription
        try:
            await self._consume(subscription)
        finally:
            await self._close(subscription)

    async def _subscribe(self) -> Subscription:
        """The group's subscription, started (closed again if it fails to start)."""
        subscription: Subscription | None = None
        try:
            # The group's dead-letter topic exists before anything could need it: a cluster
            # that does not create topics on first use would refuse the dead letter, and
            # the batch holding the poison event would be retried for ever.
            await self.bus.ensure_topics([dead_letter_topic(self.group)])
            subscription = self.bus.subscribe(
                group=self.group, topics=self.topics, on_revoke=self._on_revoke
            )
            await subscription.start()
        except BaseException:
            # A member that cannot join its group holds no partitions: their lag is for
            # whoever has them now to report (left here, it would be summed with theirs).
            self._lag.forget_all()
            if subscription is not None:  # (half started: a Kafka consumer whose group join
                with contextlib.suppress(Exception):  # failed still holds its connections)
                    await subscription.close()
            raise
        return subscription

    async def _consume(self, subscription: Subscription) -> None:
        """Poll and apply batches until `stop()`, each batch's offsets committed behind it."""
        while not self._stopping.is_set():
            records = await subscription.poll(max_records=self.batch_size, timeout=0.5)
            await self._lag.report(subscription)
            if records:
                async with self._in_flight:
                    await self.process(records)
                    await self._committed()  # the previous batch's offsets first
                    self._committing = asyncio.create_task(
                        self._commit_offsets(subscription, records)
                    )

    async def _close(self, subscription: Subscription) -> None:
        """Wait for the last offset commit, then close the subscription."""
        try:
            await self._committed()
        finally:
            await subscription.close()
            self._subscription = None
            if self._stopping.is_set():  # (after a failure it is run again: see run's doc)
                self._lag.forget_all()

    def stop(self) -> None:
        self._stopping.set()
        if self._subscription is None:  # between runs (a failed one waiting to run again)
            self._lag.forget_all()

    async def _commit_offsets(self, subscription: Subscription, records: Sequence[Record]) -> None:
        await subscription.commit(records)
        if self.hooks.after_offset_commit:
            await self.hooks.after_offset_commit(records)

    async def _committed(self) -> None:
        """Wait for the offset commit in flight, if any (its error is raised here)."""
        committing = self._committing
        if committing is not None:
            try:
                await committing  # a task may have several awaiters (a rebalance, the loop)
            finally:
                if self._committing is committing:
                    self._committing = None

    async def _on_revoke(self) -> None:
        """Before this member's partitions move: finish and commit the batch in flight, and
        leave their lag to their next owner (the lag of what it keeps is reported again at
        once)."""
        async with self._in_flight:
            await self._committed()
        self._lag.revoked()

    async def process(self, records: Sequence[Record]) -> None:
        """Apply a batch: good events in one transaction, failures isolated, poison to DLQ."""
        decoded = [self._decode(r) for r in records]
        good = [d for d in decoded if d.error is None]
        try:
            outcomes = await self._apply_batch(good)
            self._count_all(good, outcomes)
        except Exception as exc:
            log.warning(
                "batch failed; retrying its events one by one",
                group=self.group,
                size=len(good),
                error=repr(exc),
                exc_info=True,
            )
            for item in good:
                await self._apply_alone(item)
        dead = [d for d in decoded if d.error is not None]
        if dead:
            await dead_letter(self.bus, service=self.service, group=self.group, letters=dead)
        if self.hooks.after_db_commit:
            await self.hooks.after_db_commit(records)

    def _decode(self, record: Record) -> _Decoded:
        try:
            envelope = from_binary(record.headers, record.value)
            payload = decode_payload(self.catalog, envelope)
        except (MalformedEvent, UnknownEventType) as exc:
            return _Decoded(record, error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # whatever the bytes were, this record must not stall us
            return _Decoded(record, error=f"MalformedEvent: {type(exc).__name__}: {exc}")
        return _Decoded(record, envelope, payload)

    async def _apply_batch(self, items: Sequence[_Decoded]) -> list[str]:
        """`_apply` in a transaction of its own. On PostgreSQL the batch first takes its
        events to be new (the inbox records them without its conflict check, in the unit
        of work's last statement); a batch that holds an event seen before fails as it
        commits, its effects undone, and runs again checked."""
        if self.db.is_postgres:
            try:
                async with self.db.transaction() as session:
                    return await self._apply(session, items, unseen=True)
            except IntegrityError as exc:
                if not self.inbox.seen_before(exc):
                    raise
                log.info("batch holds redelivered events; applying it with the inbox check")
        async with self.db.transaction() as session:
            return await self._apply(session, items)

    async def _apply(
        self, session: AsyncSession, items: Sequence[_Decoded], *, unseen: bool = False
    ) -> list[str]:
        """Run the handlers of events the inbox has not seen; returns each one's outcome.
        `unseen`: see `Inbox.claim`."""
        handlers = self.handlers
        work = []  # (item, its handler or None, its event id)
        for item in items:
            assert item.envelope is not None and item.payload is not None
            work.append((item, handlers.get(type(item.payload)), item.envelope.id))
        fresh = await self.inbox.claim(
            session,
            group=self.group,
            event_ids=[event_id for _i, h, event_id in work if h],
            unseen=unseen,
        )
        outcomes = []
        run: list[Delivery] = []  # consecutive fresh events of one batched type
        run_handler: Batched | None = None
        for item, handler, event_id in work:
            envelope = item.envelope
            assert envelope is not None
            if not handler:
                outcomes.append("ignored")
            elif event_id not in fresh:
                outcomes.append("duplicate")
                if self.hooks.on_duplicate:
                    await self.hooks.on_duplicate(envelope)
            else:
                fresh.discard(event_id)  # a second copy in this very batch is a duplicate
                if run and handler is not run_handler:
                    await self._run_batch(run_handler, run)
                    run = []
                if isinstance(handler, Batched):
                    run_handler = handler
                    run.append((self._context(session, envelope), item.payload))
                else:
                    await self._run_handlers(session, envelope, item.payload, handler)
                outcomes.append("processed")
        if run:
            await self._run_batch(run_handler, run)
        return outcomes

    def _context(self, session: AsyncSession, envelope: Envelope) -> HandlerContext:
        return HandlerContext(session, envelope, self.outbox, Span(envelope.traceparent))

    async def _run_batch(self, handler: Batched | None, run: Sequence[Delivery]) -> None:
        assert handler is not None
        await handler.handle(run)

    async def _run_handlers(
        self,
        session: AsyncSession,
        envelope: Envelope,
        payload: Any,
        handlers: Sequence[Handler],
    ) -> None:
        incoming = envelope.traceparent
        logged = set_event_context(
            event_id=envelope.id, lead_id=envelope.subject, traceparent=incoming
        )
        trace = current_traceparent.set(Span(incoming))  # a new trace if none came or it is invalid
        try:
            context = HandlerContext(session, envelope, self.outbox)
            for handler in handlers:
                await handler(context, payload)
        finally:
            current_traceparent.reset(trace)
            reset_event_context(logged)

    async def _apply_alone(self, item: _Decoded) -> None:
        assert item.envelope is not None
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with self.db.transaction() as session:
                    (outcome,) = await self._apply(session, [item])
                self._count(item, outcome)
                return
            except Exception as exc:
                metrics.EVENTS_FAILED.labels(self.service, self.group, item.envelope.type).inc()
                log.warning(
                    "handler failed",
                    group=self.group,
                    event_id=item.event_id,
                    lead_id=item.envelope.subject,
                    trace_id=trace_id_of(item.envelope.traceparent),
                    type=item.envelope.type,
                    attempt=attempt,
                    error=repr(exc),
                )
                if attempt == self.max_attempts:
                    await self.db.ping()  # a database outage is not the event's fault: raise
                    if database_trouble(exc):  # nor a deadlock or a lost connection
                        raise
                    item.error = f"{type(exc).__name__}: {exc}"
                else:
                    await asyncio.sleep(0.05 * 2**attempt)

    def _count_all(self, items: Sequence[_Decoded], outcomes: Sequence[str]) -> None:
        types = [i.envelope.type if i.envelope else "unknown" for i in items]
        for (event_type, outcome), n in Counter(zip(types, outcomes, strict=True)).items():
            metrics.EVENTS_CONSUMED.labels(self.service, self.group, event_type, outcome).inc(n)

    def _count(self, item: _Decoded, outcome: str) -> None:
        event_type = item.envelope.type if item.envelope else "unknown"
        metrics.EVENTS_CONSUMED.labels(self.service, self.group, event_type, outcome).inc()

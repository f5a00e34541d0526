"""Group commit for webhooks: deliveries arriving together are applied in one transaction.

While one batch is being written, newly verified deliveries queue up, and the next batch
takes them all. Under load the per-delivery cost of the database work falls roughly with
the batch size (a transaction, a dozen statements and an outbox flush are paid per batch,
and the relay wakes once per commit).

Deliveries arriving together are not always queued together: on SQLite the loop runs a
batch to its end, so the senders answered by one batch come back while the next is being
verified, and a steady load settles into two half-size batches that alternate. So on
SQLite a batch under load may wait, briefly (`gather_s`), until as many deliveries are
queued as recent batches held: a steady load then fills one batch per round, and it goes
as soon as it is full. A delivery arriving when the recent batches held one (no load)
goes straight through, so a lone request never waits; when the load falls, the wait
times out and the expected size follows the smaller batches. PostgreSQL too takes one
batch at a time (see `max_workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.leads import KnownAccounts
from services.intake.webhook_intake import Delivery, DeliveryReport, apply_deliveries
from shared.runtime import ServiceRuntime

log = structlog.get_logger(__name__)


class Presumption:
    """Whether the next batch may take its deliveries and contacts to be new (PostgreSQL).

    Platforms mostly send what is new (a contact made, a property set on it); a batch that
    holds something applied or known before costs a write that fails and a second run.
    After such a batch the next `backoff` batches look things up first, the backoff
    doubling (up to `max_backoff`) while taking them to be new keeps failing, and back to
    `min_backoff` once it holds again: a source that mostly updates known contacts pays one
    failed write every `max_backoff` batches. A batch that took no contact to be new after
    all (an erasure in it, an item that could not be taken as new, such as a property
    change without the contact's email, or no contact at all) says nothing either way."""

    def __init__(self, *, min_backoff: int = 8, max_backoff: int = 1024) -> None:
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.backoff = min_backoff
        self.checked_left = 0  # batches to look things up in before presuming again

    def now(self) -> bool:
        """Take the next batch to be new? (Counts a batch that does not.)"""
        if self.checked_left > 0:
            self.checked_left -= 1
            return False
        return True

    def held(self, held: bool) -> None:
        """How a batch taken to be new went: it was (`held`), or it ran again."""
        if held:
            self.backoff = self.min_backoff
        else:
            self.checked_left = self.backoff
            self.backoff = min(self.backoff * 2, self.max_backoff)


class DeliveryBatcher:
    """Applies deliveries in batches; each caller awaits its own report."""

    def __init__(
        self,
        runtime: ServiceRuntime,
        *,
        sales_owned: frozenset[str],
        max_batch: int = 64,
        gather_s: float = 0.001,
        max_workers: int = 1,
    ) -> None:
        self.runtime = runtime
        self.sales_owned = sales_owned
        self.max_batch = max_batch
        self.gather_s = gather_s
        self._recent: deque[int] = deque(maxlen=16)  # sizes of the latest batches
        self._wanted = 0  # while a batch gathers: the queue length that completes it
        self._gathered: asyncio.Event | None = None
        self._queue: list[tuple[Delivery, asyncio.Future[DeliveryReport]]] = []
        # One batch at a time, gathering, on both databases. SQLite has one writer. On
        # PostgreSQL two batches could overlap (a second written while the first waits on
        # its round trips; leads are locked in id order), which served ~6% more requests
        # per second while each statement cost ~75 µs more CPU in SQLAlchemy; with the
        # statements on the driver connection, one gathering batch serves ~7% more
        # (1,737 and 1,778 against 1,625 and 1,656 req/s in paired runs) for ~18% less
        # CPU a request (472 against 575 µs): half as many commits, relay cycles and
        # statements per request.
        # With several workers there is no gathering (the overlap takes its place).
        self.max_workers = max(1, max_workers)
        self.presumption = Presumption()
        self.accounts_known = KnownAccounts()
        if self.max_workers > 1:
            self.gather_s = 0.0
        self._workers: set[asyncio.Task[None]] = set()

    async def apply(self, delivery: Delivery) -> DeliveryReport:
        """Apply one delivery, together with whatever else is waiting."""
        future: asyncio.Future[DeliveryReport] = asyncio.get_running_loop().create_future()
        self._queue.append((delivery, future))
        if self._gathered is not None and len(self._queue) >= self._wanted:
            self._gathered.set()
        if len(self._workers) < self.max_workers:
            # In a context of its own: the request that starts it is one of many it serves
            # (each delivery carries its own trace), and must not lend it its log context.
            worker = asyncio.create_task(
                self._drain(), name="intake-deliveries", context=contextvars.Context()
            )
            self._workers.add(worker)
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._gather()
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                self._recent.append(len(batch))
                await self._apply_batch(batch)
        finally:
            # Leave the set in the same step that saw the queue empty: a delivery queued
            # from now on finds room to start a worker.
            task = asyncio.current_task()
            if task is not None:
                self._workers.discard(task)

    async def _gather(self) -> None:
        """Under load, wait (at most `gather_s`) until as many deliveries are queued as the
        largest recent batch held."""
        wanted = min(max(self._recent, default=1), self.max_batch)
        if len(self._queue) >= wanted or self._gathered is not None or self.gather_s <= 0:
            return
        self._wanted, self._gathered = wanted, asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gathered.wait(), self.gather_s)
        finally:
            self._gathered = None

    async def _apply_batch(
        self, batch: Sequence[tuple[Delivery, asyncio.Future[DeliveryReport]]]
    ) -> None:
        try:
            reports = await self._apply([delivery for delivery, _ in batch])
        except Exception as exc:
            if len(batch) == 1:  # the request gets the error (a logged 500)
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            log.warning("webhook batch failed; applying its deliveries one by one", size=len(batch))
            for one in batch:
                await self._apply_batch([one])
            return
        for (_, future), report in zip(batch, reports, strict=True):
            if not future.done():
                future.set_result(report)

    async def _apply(self, deliveries: list[Delivery]) -> list[DeliveryReport]:
        # On PostgreSQL a batch first takes its deliveries and their contacts to be new
        # (platforms send a delivery again only when an answer was lost, and mostly send
        # new contacts): no look-ups, so a batch of new contacts is one statement; one run
        # more when one was seen or known (a key fails the write) or another writer made
        # one of its rows. See `Presumption` for a source that mostly updates.
        postgres = self.runtime.db.is_postgres
        presumed = postgres and self.presumption.now()
        attempts = 0
        untested = False  # (the first run took no contact to be new after all)

        def not_taken_as_new() -> None:
            nonlocal untested
            untested = True

        async def work(session: AsyncSession) -> list[DeliveryReport]:
            nonlocal attempts
            attempts += 1
            return await apply_deliveries(
                session,
                self.runtime.outbox,
                deliveries,
                sales_owned=self.sales_owned,
                unseen=presumed and attempts == 1,
                accounts_known=self.accounts_known,
                not_taken_as_new=not_taken_as_new,
            )

        try:
            reports = await self.runtime.db.run(work, conflict_retries=2 if postgres else 1)
        except Exception:
            if presumed and attempts > 1 and not untested:
                self.presumption.held(False)
            raise
        if presumed and not untested:  # (a batch that took no contact to be new: neither)
            self.presumption.held(attempts == 1)
            if attempts > 1:
                log.info(
                    "webhook batch held a delivery or contact known before; it ran again "
                    "looking them up, as will the next batches",
                    size=len(deliveries),
                    looking_up_next=self.presumption.checked_left,
                )
        return reports

"""Running an import: batches of parsed rows captured in their own transactions.

A pipeline: records are read from the stream here, validated in batches by the
`ImportValidator` (another process once it runs), and captured here in order, so that
one batch is written while the next ones are validated. On PostgreSQL the captures
overlap too (`_Captures`): a batch reads and works out its changes while the one before
it is being written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.import_validation import ImportValidator
from services.intake.importing import (
    ImportedLead,
    ParsedRow,
    Record,
    RowError,
    RowPolicy,
    records,
)
from services.intake.leads import CaptureOutcome, capture_batch
from shared.runtime import ServiceRuntime
from shared.settings import IntakeSettings

log = structlog.get_logger(__name__)

_AHEAD = 2  # batches validated ahead of the one being written (bounds memory)
BATCH_TASK = "intake-import-batch"  # the name of the task capturing a batch


@dataclass
class ImportSummary:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[RowError] = field(default_factory=list)
    max_errors: int = 1000

    def error(self, problem: RowError) -> None:
        if len(self.errors) < self.max_errors:
            self.errors.append(problem)

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": self.failed,
            # in line order (a batch's failed captures are counted after the validation
            # errors of the next rows, as batches overlap)
            "errors": [e.as_json() for e in sorted(self.errors, key=lambda e: e.line)],
            "errors_truncated": self.failed > 0 and len(self.errors) >= self.max_errors,
        }


async def run_import(
    runtime: ServiceRuntime,
    chunks: AsyncIterator[bytes],
    fmt: str,
    settings: IntakeSettings,
    policy: RowPolicy = RowPolicy(),
) -> ImportSummary:
    """Capture every good row; each batch commits on its own, so good rows are kept.
    `policy` is the caller's say over the rows' source."""
    summary = ImportSummary(max_errors=settings.import_max_errors)
    validator = ImportValidator.of(runtime)
    size = settings.import_batch_size
    validating: deque[asyncio.Future[list[ParsedRow]]] = deque()
    captures = _Captures(runtime, settings, summary)
    batch: list[ParsedRow] = []

    async def take(rows: list[ParsedRow]) -> None:
        nonlocal batch
        for row in rows:
            summary.rows += 1
            if row.lead is None:
                summary.failed += 1
                for problem in row.errors:
                    summary.error(problem)
                continue
            batch.append(row)
            if len(batch) >= size:
                await captures.submit(batch)
                batch = []

    try:
        pending: list[Record] = []
        async for record in records(chunks, fmt):
            pending.append(record)
            if len(pending) >= size:
                validating.append(asyncio.ensure_future(validator.validate(pending, policy)))
                pending = []
                if len(validating) > _AHEAD:
                    await take(await validating.popleft())
        if pending:
            validating.append(asyncio.ensure_future(validator.validate(pending, policy)))
        while validating:
            await take(await validating.popleft())
        if batch:
            await captures.submit(batch)
        await captures.finish()
    except asyncio.CancelledError:  # the client went away
        await captures.cancel()
        raise
    except BaseException:  # a capture failed: the batches already committing may finish
        await captures.settle()
        raise
    finally:
        for future in validating:
            future.cancel()
    log.info(
        "import finished",
        rows=summary.rows,
        created=summary.created,
        updated=summary.updated,
        failed=summary.failed,
    )
    return summary


class _Captures:
    """Captures batches in order, each in a transaction of its own, and counts the outcomes.

    On PostgreSQL the next batch starts as soon as the one before has done its reads and
    worked out its changes, while that one is being written: one batch's reads and CPU
    work overlap the other's writes (~20 ms of a 1,000-row batch). It waits for the one
    before to end first when they name the same lead (an email or an external id) or it
    needs an account the one before creates: its reads would not see those rows yet. A
    row its reads missed all the same (an account of an updated lead's stored domain, or a
    row another request made meanwhile) makes its commit fail and the batch run again
    from its reads, as any two writers making one row do (`Database.run`). Two batches in
    flight may commit in either order (a lead both reach, by different keys, is locked by
    one, then the other). When a batch fails, no later batch starts; the import fails
    once the one already committing beside it has ended (kept if it committed). SQLite
    writes one transaction at a time: there, batches take turns.
    """

    def __init__(
        self, runtime: ServiceRuntime, settings: IntakeSettings, summary: ImportSummary
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.summary = summary
        self.overlap = runtime.db.is_postgres
        self._in_flight: deque[_Capture] = deque()  # in batch order

    async def submit(self, rows: list[ParsedRow]) -> None:
        """Start capturing `rows`; return once their changes are worked out and every
        batch before them is done and counted."""
        capture = _Capture(rows)
        before = self._in_flight[-1] if self._in_flight else None
        if before is not None and before.running().done():
            await self.finish()  # (raises if it failed: no later batch starts)
            before = None
        if before is not None and (not self.overlap or before.conflicts_with(capture)):
            await self.finish()
        capture.task = asyncio.create_task(self._run(capture), name=BATCH_TASK)
        self._in_flight.append(capture)
        await capture.worked_out()
        while len(self._in_flight) > 1:
            await self._count(self._in_flight.popleft())

    async def finish(self) -> None:
        """Wait for every batch in flight and count it."""
        while self._in_flight:
            await self._count(self._in_flight.popleft())

    async def settle(self) -> None:
        """After a failure: let the batches in flight end (their errors are the failure's)."""
        captures, self._in_flight = list(self._in_flight), deque()
        for capture in captures:
            with contextlib.suppress(BaseException):
                await capture.running()

    async def cancel(self) -> None:
        """The client went away: stop what is in flight."""
        for capture in self._in_flight:
            capture.running().cancel()
        await self.settle()

    async def _run(self, capture: _Capture) -> list[CaptureOutcome]:
        async def work(session: AsyncSession) -> list[CaptureOutcome]:
            capture.new_accounts = set()
            outcomes = await capture_batch(
                session,
                self.runtime.outbox,
                capture.leads,
                sales_owned=self.settings.sales_owned_fields,
                new_accounts=capture.new_accounts,
            )
            capture.ready.set()  # (what is left: its writes, as it commits)
            return outcomes

        try:
            # Up to three runs again: a row this batch's reads missed, and rows that other
            # requests made meanwhile.
            return await self.runtime.db.run(work, conflict_retries=3)
        finally:
            capture.ready.set()

    async def _count(self, capture: _Capture) -> None:
        outcomes = await capture.running()
        summary = self.summary
        for row, outcome in zip(capture.rows, outcomes, strict=True):
            if outcome.error is not None:
                summary.failed += 1
                summary.error(RowError(row.line, outcome.error.field, outcome.error.reason))
            elif outcome.created:
                summary.created += 1
            elif outcome.changes:
                summary.updated += 1
            else:
                summary.unchanged += 1


class _Capture:
    """One batch on its way: its rows, what it names, its task."""

    def __init__(self, rows: list[ParsedRow]) -> None:
        self.rows = rows
        self.task: asyncio.Task[list[CaptureOutcome]] | None = None
        self.ready = asyncio.Event()  # its changes are worked out (or it ended)
        self.new_accounts: set[str] = set()  # the domains of the accounts it creates

    @functools.cached_property
    def leads(self) -> list[ImportedLead]:
        return [row.lead for row in self.rows if row.lead is not None]

    @functools.cached_property
    def emails(self) -> set[str]:
        return {lead.email for lead in self.leads}

    @functools.cached_property
    def external_ids(self) -> set[tuple[str, str]]:
        return {pair for lead in self.leads for pair in lead.external_ids.items()}

    @functools.cached_property
    def domains(self) -> set[str]:
        return {d for lead in self.leads if (d := lead.account_domain()) is not None}

    def running(self) -> asyncio.Task[list[CaptureOutcome]]:
        assert self.task is not None
        return self.task

    async def worked_out(self) -> None:
        """Wait until its changes are worked out; raise if it failed before."""
        await self.ready.wait()
        if self.running().done():
            self.running().result()  # (raises its error)

    def conflicts_with(self, later: _Capture) -> bool:
        """Would `later`'s reads, made before this one commits, miss rows it needs?"""
        return (
            not self.emails.isdisjoint(later.emails)
            or not self.external_ids.isdisjoint(later.external_ids)
            or not self.new_accounts.isdisjoint(later.domains)
        )

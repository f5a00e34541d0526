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
import heapq
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
    UnreadableHeader,
    records,
)
from services.intake.leads import CaptureOutcome, capture_batch
from shared.problems import Problem
from shared.runtime import ServiceRuntime
from shared.settings.services import IntakeSettings

log = structlog.get_logger(__name__)

_AHEAD = 2  # batches validated ahead of the one being written (bounds memory)
IN_FLIGHT = 4  # PostgreSQL: batches at once (one reading, one working out, two writing)
BATCH_TASK = "intake-import-batch"  # the name of the task capturing a batch


@dataclass
class ImportSummary:
    rows: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    max_errors: int = 1000
    dropped: int = 0  # errors past `max_errors`, not kept
    ignored_columns: list[str] = field(default_factory=list)  # a CSV's that are no lead field
    # the first `max_errors` errors by line, as a heap with the last line kept on top: a
    # batch's failed captures come after the validation errors of the rows after it, as
    # batches overlap, and must still be among the first reported
    _kept: list[tuple[int, int, RowError]] = field(default_factory=list)

    @property
    def errors(self) -> list[RowError]:
        """The errors kept, in line order (and in the order they came within a line)."""
        return [e for _line, _n, e in sorted(self._kept, key=lambda k: (-k[0], -k[1]))]

    def error(self, problem: RowError) -> None:
        entry = (-problem.line, -len(self._kept) - self.dropped, problem)
        if len(self._kept) < self.max_errors:
            heapq.heappush(self._kept, entry)
            return
        self.dropped += 1
        if self._kept and entry > self._kept[0]:  # an earlier line than the last one kept
            # (none kept: `import_max_errors` 0 keeps the count and no details)
            heapq.heapreplace(self._kept, entry)

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "errors": [e.as_json() for e in self.errors],
            "errors_truncated": self.dropped > 0,
            "ignored_columns": self.ignored_columns,
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
        async for record in records(chunks, fmt, summary.ignored_columns):
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
    except UnreadableHeader as exc:  # read before any row: nothing was captured
        raise Problem(
            422,
            "Unreadable CSV header",
            f"the header cannot be read, so no row can be: {exc.reason}",
            errors=[{"field": "header", "reason": exc.reason}],
        ) from exc
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

    On PostgreSQL a batch starts as soon as the one before has done its reads (at most
    `IN_FLIGHT` at once): one batch's reads wait on the database while the one before
    works out its changes and those before it are written (~40 ms of a 2,000-row batch),
    so that this process seldom waits. A batch waits for those in flight to end first
    when it names a lead of theirs (an email or an external id), a visitor of theirs, or
    an account domain that had no account when they read: its reads would not see what
    they write, and two batches stitching one visitor could lock each other. A row its
    reads missed all the same (an account of an updated lead's stored domain, or a row
    another request made meanwhile) makes its commit fail and the batch run again from its
    reads, as any two writers making one row do (`Database.run`). Batches in flight may
    commit in any order (a lead two of them reach, by different keys, is locked by one,
    then the other). Once a batch has failed, no batch starts; the import fails once the
    batches in flight beside it have ended (kept if they committed). SQLite writes one
    transaction at a time: there, batches take turns.
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
        """Start capturing `rows`; return once they are read, and every batch before the
        last `IN_FLIGHT` is done and counted."""
        capture = _Capture(rows)
        if any(c.failed() for c in self._in_flight):
            await self.finish()  # (raises: no batch starts after a failed one)
        while self._in_flight and self._in_flight[0].running().done():
            await self._count(self._in_flight.popleft())
        if self._in_flight and (
            not self.overlap or any(c.conflicts_with(capture) for c in self._in_flight)
        ):
            await self.finish()
        while len(self._in_flight) >= IN_FLIGHT:
            await self._count(self._in_flight.popleft())
        capture.task = asyncio.create_task(self._run(capture), name=BATCH_TASK)
        self._in_flight.append(capture)
        await capture.read()

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
            return await capture_batch(
                session,
                self.runtime.outbox,
                capture.leads,
                sales_owned=self.settings.sales_owned_fields,
                read=capture.has_read,
            )

        try:
            # Up to three runs again: a row this batch's reads missed, and rows that other
            # requests made meanwhile.
            return await self.runtime.db.run(work, conflict_retries=3)
        finally:
            capture.reads.set()

    async def _count(self, capture: _Capture) -> None:
        outcomes = await capture.running()
        summary = self.summary
        for row, outcome in zip(capture.rows, outcomes, strict=True):
            if outcome.error is not None:
                summary.failed += 1
                summary.error(RowError(row.line, outcome.error.field, outcome.error.reason))
            elif outcome.created:
                summary.created += 1
            elif outcome.changes or outcome.linked:  # (linked: to an id on another platform)
                summary.updated += 1
            else:
                summary.unchanged += 1


class _Capture:
    """One batch on its way: its rows, what it names, its task."""

    def __init__(self, rows: list[ParsedRow]) -> None:
        self.rows = rows
        self.task: asyncio.Task[list[CaptureOutcome]] | None = None
        self.reads = asyncio.Event()  # its reads are done (or it ended)
        self.new_domains: set[str] = set()  # its account domains without an account then

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
    def visitor_ids(self) -> set[str]:
        return {lead.visitor_id for lead in self.leads if lead.visitor_id}

    @functools.cached_property
    def domains(self) -> set[str]:
        return {d for lead in self.leads if (d := lead.account_domain()) is not None}

    def has_read(self, new_domains: set[str]) -> None:
        self.new_domains = new_domains
        self.reads.set()

    def running(self) -> asyncio.Task[list[CaptureOutcome]]:
        assert self.task is not None
        return self.task

    def failed(self) -> bool:
        task = self.running()
        return task.done() and (task.cancelled() or task.exception() is not None)

    async def read(self) -> None:
        """Wait until its reads are done; raise if it failed before."""
        await self.reads.wait()
        if self.running().done():
            self.running().result()  # (raises its error)

    def conflicts_with(self, later: _Capture) -> bool:
        """Would `later`'s reads, made before this one commits, miss rows it needs?"""
        return (
            not self.emails.isdisjoint(later.emails)
            or not self.external_ids.isdisjoint(later.external_ids)
            or not self.visitor_ids.isdisjoint(later.visitor_ids)
            or not self.new_domains.isdisjoint(later.domains)
        )

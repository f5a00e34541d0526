"""Running an import: batches of parsed rows captured in their own transactions.

A pipeline: records are read from the stream here, validated in batches by the
`ImportValidator` (another process once it runs), and captured here in order, so that
one batch is written while the next ones are validated.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.import_validation import ImportValidator
from services.intake.importing import ParsedRow, Record, RowError, RowPolicy, records
from services.intake.leads import CaptureOutcome, capture_batch
from shared.runtime import ServiceRuntime
from shared.settings import IntakeSettings

log = structlog.get_logger(__name__)

_AHEAD = 2  # batches validated ahead of the one being written (bounds memory)


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
            "errors": [e.as_json() for e in self.errors],
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
                await _capture(runtime, batch, summary, settings)
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
            await _capture(runtime, batch, summary, settings)
    finally:
        for future in validating:  # the client went away, or a capture failed
            future.cancel()
    log.info(
        "import finished",
        rows=summary.rows,
        created=summary.created,
        updated=summary.updated,
        failed=summary.failed,
    )
    return summary


async def _capture(
    runtime: ServiceRuntime,
    batch: list[ParsedRow],
    summary: ImportSummary,
    settings: IntakeSettings,
) -> None:
    """Capture one batch of good rows in one transaction and count what happened."""
    leads = [row.lead for row in batch if row.lead is not None]

    async def work(session: AsyncSession) -> list[CaptureOutcome]:
        return await capture_batch(
            session, runtime.outbox, leads, sales_owned=settings.sales_owned_fields
        )

    outcomes = await runtime.db.run(work)
    for row, outcome in zip(batch, outcomes, strict=True):
        if outcome.error is not None:
            summary.failed += 1
            summary.error(RowError(row.line, outcome.error.field, outcome.error.reason))
        elif outcome.created:
            summary.created += 1
        elif outcome.changes:
            summary.updated += 1
        else:
            summary.unchanged += 1

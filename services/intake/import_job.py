"""Running an import: batches of parsed rows captured in their own transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.importing import ParsedRow, RowError, parse
from services.intake.leads import CaptureOutcome, capture_batch
from shared.runtime import ServiceRuntime
from shared.settings import IntakeSettings

log = structlog.get_logger(__name__)


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
    runtime: ServiceRuntime, chunks: AsyncIterator[bytes], fmt: str, settings: IntakeSettings
) -> ImportSummary:
    """Capture every good row; each batch commits on its own, so good rows are kept."""
    summary = ImportSummary(max_errors=settings.import_max_errors)
    batch: list[ParsedRow] = []
    async for row in parse(chunks, fmt):
        summary.rows += 1
        if row.lead is None:
            summary.failed += 1
            for problem in row.errors:
                summary.error(problem)
            continue
        batch.append(row)
        if len(batch) >= settings.import_batch_size:
            await _capture(runtime, batch, summary, settings)
            batch = []
    if batch:
        await _capture(runtime, batch, summary, settings)
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

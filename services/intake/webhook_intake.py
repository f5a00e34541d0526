"""Applying a verified webhook delivery: each event once, the bad ones reported."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.activities import UnknownLead, record_activity
from services.intake.canonical import ActivityIn, LeadIn
from services.intake.leads import capture_batch
from services.intake.models import webhook_deliveries
from services.intake.providers import InboundItem, SourceConfig
from shared.outbox import Outbox


@dataclass
class DeliveryReport:
    accepted: int = 0
    duplicates: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "failed": self.failed}


async def apply_items(
    session: AsyncSession,
    outbox: Outbox,
    items: Sequence[InboundItem],
    *,
    source: SourceConfig,
    sales_owned: frozenset[str],
) -> DeliveryReport:
    """Apply every new, valid item once per source; the source decides the lead source.

    Items that carry an email go first: a batch may name a new contact's other properties
    before its email, and those must find the lead the email creates.
    """
    report = DeliveryReport()
    seen = await _seen(session, source.name, [i.delivery_id for i in items])
    leads: list[tuple[InboundItem, LeadIn]] = []
    done: list[tuple[str, str | None]] = []
    for item in sorted(items, key=lambda i: 0 if i.data.get("email") else 1):
        if item.delivery_id in seen:
            report.duplicates += 1
            continue
        seen.add(item.delivery_id)
        if item.error is not None:
            report.failed.append({"delivery_id": item.delivery_id, "reason": item.error})
            continue
        try:
            if item.kind == "lead":
                data = {**item.data, "source": source.lead_source}  # not the payload's say
                leads.append((item, LeadIn.model_validate(data)))
                continue
            recorded = await record_activity(session, outbox, ActivityIn.model_validate(item.data))
            done.append((item.delivery_id, recorded.lead_id))
        except ValidationError as exc:
            report.failed.append({"delivery_id": item.delivery_id, "reason": _reason(exc)})
        except UnknownLead as exc:
            report.failed.append({"delivery_id": item.delivery_id, "reason": exc.reason})
    outcomes = await capture_batch(
        session, outbox, [lead for _, lead in leads], sales_owned=sales_owned
    )
    for (item, _), outcome in zip(leads, outcomes, strict=True):
        if outcome.error is not None:
            report.failed.append(
                {
                    "delivery_id": item.delivery_id,
                    "reason": f"{outcome.error.field}: {outcome.error.reason}",
                }
            )
        else:
            done.append((item.delivery_id, outcome.lead_id))
    if done:
        now = datetime.now(UTC)
        await session.execute(
            insert(webhook_deliveries),
            [
                {"source_name": source.name, "delivery_id": d, "lead_id": lead, "received_at": now}
                for d, lead in done
            ],
        )
    report.accepted = len(done)
    return report


async def _seen(session: AsyncSession, source_name: str, delivery_ids: list[str]) -> set[str]:
    if not delivery_ids:
        return set()
    rows = await session.execute(
        select(webhook_deliveries.c.delivery_id).where(
            webhook_deliveries.c.source_name == source_name,
            webhook_deliveries.c.delivery_id.in_(delivery_ids),
        )
    )
    return set(rows.scalars())


def _reason(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors()
    )

"""Applying verified webhook deliveries: each event once per source, the bad ones reported.

Several deliveries can be applied in one unit of work (see `DeliveryBatcher`): their leads
are captured in one `capture_batch`, which is what makes intake fast under load.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.activities import UnknownLead, record_activity
from services.intake.canonical import ActivityIn, LeadIn
from services.intake.driver_sql import DriverSql, Query
from services.intake.erasure import erase_lead
from services.intake.leads import IDS_BY_EXTERNAL_ID, capture_batch
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


@dataclass(frozen=True)
class Delivery:
    """One verified webhook request: its items and the source that sent them."""

    items: Sequence[InboundItem]
    source: SourceConfig


async def apply_items(
    session: AsyncSession,
    outbox: Outbox,
    items: Sequence[InboundItem],
    *,
    source: SourceConfig,
    sales_owned: frozenset[str],
) -> DeliveryReport:
    """Apply one delivery (see `apply_deliveries`)."""
    (report,) = await apply_deliveries(
        session, outbox, [Delivery(items, source)], sales_owned=sales_owned
    )
    return report


async def apply_deliveries(
    session: AsyncSession,
    outbox: Outbox,
    deliveries: Sequence[Delivery],
    *,
    sales_owned: frozenset[str],
) -> list[DeliveryReport]:
    """Apply every new, valid item once per source; the source decides the lead source.

    Items that carry an email go first: a batch may name a new contact's other properties
    before its email, and those must find the lead the email creates. Erasures go last:
    a person deleted for privacy is forgotten with whatever the same batch said of them.
    """
    reports = [DeliveryReport() for _ in deliveries]
    seen = await _seen(session, deliveries)
    leads: list[tuple[int, InboundItem, LeadIn]] = []
    erasures: list[tuple[int, InboundItem]] = []
    done: list[tuple[int, str, str | None]] = []
    ordered = [(n, item) for n, d in enumerate(deliveries) for item in d.items]
    for n, item in sorted(ordered, key=lambda pair: 0 if pair[1].data.get("email") else 1):
        source, report = deliveries[n].source, reports[n]
        if (source.name, item.delivery_id) in seen:
            report.duplicates += 1
            continue
        seen.add((source.name, item.delivery_id))
        if item.error is not None:
            report.failed.append({"delivery_id": item.delivery_id, "reason": item.error})
            continue
        if item.kind == "erasure":
            erasures.append((n, item))
            continue
        try:
            if item.kind == "lead":
                data = {**item.data, "source": source.lead_source}  # not the payload's say
                leads.append((n, item, LeadIn.model_validate(data)))
                continue
            recorded = await record_activity(session, outbox, ActivityIn.model_validate(item.data))
            done.append((n, item.delivery_id, recorded.lead_id))
        except ValidationError as exc:
            report.failed.append({"delivery_id": item.delivery_id, "reason": _reason(exc)})
        except UnknownLead as exc:
            report.failed.append({"delivery_id": item.delivery_id, "reason": exc.reason})
    outcomes = await capture_batch(
        session, outbox, [lead for _, _, lead in leads], sales_owned=sales_owned
    )
    for (n, item, _), outcome in zip(leads, outcomes, strict=True):
        if outcome.error is not None:
            reports[n].failed.append(
                {
                    "delivery_id": item.delivery_id,
                    "reason": f"{outcome.error.field}: {outcome.error.reason}",
                }
            )
        else:
            done.append((n, item.delivery_id, outcome.lead_id))
    if erasures:
        # What this batch captured must be in the tables before it is erased (PostgreSQL
        # writes staged rows only as the unit of work commits).
        await (await DriverSql.of(session)).write_staged()
        for n, item in erasures:
            lead_id = await _erase(session, outbox, item, deliveries[n].source)
            done.append((n, item.delivery_id, lead_id))
    if done:
        now = datetime.now(UTC)
        await (await DriverSql.of(session)).stage(
            webhook_deliveries,
            ("source_name", "delivery_id", "lead_id", "received_at"),
            [(deliveries[n].source.name, d, lead, now) for n, d, lead in done],
        )
    for n, _, _ in done:
        reports[n].accepted += 1
    return reports


async def _erase(
    session: AsyncSession, outbox: Outbox, item: InboundItem, source: SourceConfig
) -> str | None:
    """Erase the lead an erasure item names by its external ids (None: intake does not know
    the person, which is no failure)."""
    sql = await DriverSql.of(session)
    for provider, external_id in item.data.get("external_ids", {}).items():
        rows = await sql.fetch(IDS_BY_EXTERNAL_ID, [provider], [external_id])
        if rows:
            lead_id: str = rows[0][0]
            await erase_lead(session, outbox, lead_id, requested_by=f"webhook:{source.name}")
            return lead_id
    return None


async def _seen(session: AsyncSession, deliveries: Sequence[Delivery]) -> set[tuple[str, str]]:
    by_source: dict[str, list[str]] = defaultdict(list)
    for delivery in deliveries:
        by_source[delivery.source.name] += [i.delivery_id for i in delivery.items]
    seen: set[tuple[str, str]] = set()
    sql = await DriverSql.of(session)
    for source_name, delivery_ids in by_source.items():
        if not delivery_ids:
            continue
        rows = await sql.fetch(_SEEN, [source_name], delivery_ids)
        seen |= {(source_name, d) for (d,) in rows}
    return seen


_SEEN = Query(
    sqlite="SELECT delivery_id FROM webhook_deliveries "
    "WHERE source_name = ? AND delivery_id IN ({})",
    # one index probe per id (see `driver_sql`)
    postgres="SELECT d.delivery_id FROM (SELECT DISTINCT unnest($2::varchar[])) AS k(id), "
    "LATERAL (SELECT delivery_id FROM webhook_deliveries "
    "WHERE source_name = $1 AND delivery_id = k.id LIMIT 1) AS d",
)


def _reason(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors()
    )

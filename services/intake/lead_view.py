"""Reading a lead back (for the API)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.intake.models import accounts, lead_external_ids, leads


async def lead_view(conn: AsyncConnection, lead_id: str) -> dict[str, Any] | None:
    """The lead as the API shows it, or None."""
    row = (await conn.execute(select(leads).where(leads.c.id == lead_id))).first()
    if row is None:
        return None
    domain = None
    if row.account_id:
        domain = await conn.scalar(select(accounts.c.domain).where(accounts.c.id == row.account_id))
    ids: dict[str, list[str]] = {}
    for r in await conn.execute(
        select(lead_external_ids)
        .where(lead_external_ids.c.lead_id == lead_id)
        .order_by(lead_external_ids.c.provider, lead_external_ids.c.external_id)
    ):
        ids.setdefault(r.provider, []).append(r.external_id)
    return {
        "lead_id": row.id,
        "email": row.email,
        "source": row.source,
        "account": {"id": row.account_id, "domain": domain} if row.account_id else None,
        "profile": row.profile,
        "field_sources": row.field_sources,
        "external_ids": ids,
        "created_at": _utc(row.created_at),
        "updated_at": _utc(row.updated_at),
        "erased": row.erased_at is not None,
    }


def _utc(moment: datetime) -> datetime:
    """A stored time as UTC with its offset: SQLite gives back the UTC time it stored
    without one (PostgreSQL's `timestamptz` keeps it), and the API says the same either way."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

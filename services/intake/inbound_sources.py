"""Inbound sources: which marketing platforms may post webhooks, with their secrets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import structlog
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.intake.canonical import ActivityIn, Channel, LeadIn, LeadSource
from services.intake.models import inbound_sources
from services.intake.providers import ADAPTERS, SourceConfig
from shared.runtime import ServiceRuntime
from shared.sealing import PREFIX, Sealer

log = structlog.get_logger(__name__)


# What a webhook field may be mapped to: a field of the kind of item it goes into, the
# canonical lead's or activity's (`external_ids` and `custom` by key too: `custom.tier`).
KIND_FIELDS: dict[str, frozenset[str]] = {
    "lead": frozenset(LeadIn.model_fields),
    "activity": frozenset(ActivityIn.model_fields),
}
MAPPABLE_FIELDS = KIND_FIELDS["lead"] | KIND_FIELDS["activity"]
_BY_KEY = {"external_ids": "external_ids.<provider>", "custom": "custom.<name>"}


def _field_of(target: str) -> str:
    """The canonical field a field map's target sets (`custom.tier` sets `custom`)."""
    parent, dot, key = target.partition(".")
    return parent if dot and key and parent in _BY_KEY else target


def _made_by_provider(target: str, info: ValidationInfo) -> str:
    """A target the source's provider has a field for: a lead-only provider's lead with an
    activity's field would fail, every delivery. (A target that is no field at all is
    refused by `InboundSourceIn._targets`.)"""
    adapter = ADAPTERS.get(info.data.get("provider", ""))
    field = _field_of(target)
    if adapter is None or field not in MAPPABLE_FIELDS:
        return target
    fields = frozenset[str]().union(*(KIND_FIELDS[kind] for kind in adapter.mapped_kinds))
    if field not in fields:
        made = " and ".join(f"{kind}s" for kind in sorted(adapter.mapped_kinds))
        allowed = [_BY_KEY.get(name, name) for name in sorted(fields)]
        raise ValueError(
            f"a {adapter.name} source makes {made} only, which have no field {target!r}; "
            f"it may map to: {', '.join(allowed)}"
        )
    return target


class InboundSourceIn(BaseModel):
    """An inbound source as an admin configures it; the secret is never shown again."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$", examples=["hubspot-main"])
    provider: Literal["hubspot", "standard", "marketo"]
    secret: str = Field(
        min_length=16,
        max_length=500,
        description="HubSpot app secret, whsec_ secret, or Marketo token",
    )
    lead_source: LeadSource = "marketing"
    channel: Channel | None = None
    # (after `provider`: a target is checked against what the provider makes)
    field_map: dict[str, Annotated[str, AfterValidator(_made_by_provider)]] = Field(
        default_factory=dict, max_length=200
    )
    token_header: str = Field(default="x-handoff-token", max_length=100)

    @field_validator("token_header")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("field_map")
    @classmethod
    def _targets(cls, value: dict[str, str]) -> dict[str, str]:
        """Every target is a canonical field (a typo would fail every delivery later)."""
        for name, target in value.items():
            if _field_of(target) not in MAPPABLE_FIELDS:
                raise ValueError(
                    f"{name!r} maps to {target!r}, which is no lead or activity field; "
                    "use a field name, external_ids.<provider> or custom.<name>"
                )
        return value


def check_secret(source: InboundSourceIn) -> str | None:
    """Why this provider cannot use the secret, or None."""
    if source.provider == "standard":
        from standardwebhooks import Webhook

        try:
            Webhook(source.secret)
        except Exception:
            return "not a Standard Webhooks secret (whsec_ followed by base64)"
    return None


async def create_source(session: AsyncSession, source: InboundSourceIn, sealer: Sealer) -> None:
    """Store a source; its secret sealed (`shared.sealing`)."""
    values = {**source.model_dump(), "secret": sealer.seal(source.secret)}
    await session.execute(insert(inbound_sources).values(**values, created_at=datetime.now(UTC)))


async def delete_source(session: AsyncSession, name: str) -> bool:
    result = await session.execute(delete(inbound_sources).where(inbound_sources.c.name == name))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def list_sources(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(select(inbound_sources).order_by(inbound_sources.c.name))
    return [
        {
            "name": r.name,
            "provider": r.provider,
            "lead_source": r.lead_source,
            "channel": r.channel,
            "field_map": r.field_map,
            "token_header": r.token_header,
            "created_at": r.created_at,
            "webhook_path": f"/v1/webhooks/{r.provider}?source={r.name}",
        }
        for r in rows
    ]


async def find_source(
    conn: AsyncConnection, provider: str, name: str | None, sealer: Sealer
) -> SourceConfig | str:
    """The source a webhook is for, or why none fits (`SealError`: its stored secret cannot
    be opened with this secret key)."""
    stmt = select(inbound_sources).where(inbound_sources.c.provider == provider)
    if name is not None:
        stmt = stmt.where(inbound_sources.c.name == name)
    rows = (await conn.execute(stmt)).all()
    if not rows:
        return f"no {provider} inbound source" + (f" named {name!r}" if name else "")
    if len(rows) > 1:
        return f"several {provider} sources exist: say which with ?source=<name>"
    r = rows[0]
    return SourceConfig(
        name=r.name,
        provider=r.provider,
        secret=sealer.open(r.secret),
        lead_source=r.lead_source,
        channel=r.channel,
        field_map=dict(r.field_map),
        token_header=r.token_header,
    )


async def seal_clear_secrets(session: AsyncSession, sealer: Sealer) -> int:
    """Seal the secrets stored before sealing existed; returns how many there were."""
    rows = (
        await session.execute(
            select(inbound_sources.c.name, inbound_sources.c.secret).where(
                inbound_sources.c.secret.not_like(f"{PREFIX}%")
            )
        )
    ).all()
    for name, secret in rows:
        await session.execute(  # (unless it changed meanwhile: another replica, the API)
            update(inbound_sources)
            .where(inbound_sources.c.name == name, inbound_sources.c.secret == secret)
            .values(secret=sealer.seal(secret))
        )
    return len(rows)


class SealClearSecrets:
    """A service worker: once the service has started, seals the sources' secrets that an
    earlier version stored in the clear (a dump of the database would still show them)."""

    def __init__(self, runtime: ServiceRuntime) -> None:
        self.runtime = runtime

    async def run(self) -> None:
        try:
            async with self.runtime.db.transaction() as session:
                sealed = await seal_clear_secrets(session, self.runtime.settings.sealer())
        except Exception:
            log.exception("sealing stored secrets failed; they stay readable as they are")
            return
        if sealed:
            log.info("sealed inbound source secrets stored in the clear", sources=sealed)

    def stop(self) -> None:
        pass  # (one short transaction: nothing to interrupt)


def known_provider(provider: str) -> bool:
    return provider in ADAPTERS

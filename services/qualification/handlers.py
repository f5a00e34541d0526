"""Qualification's event handlers: intake's facts and routing's owners drive the scores."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from services.qualification.lead_state import LeadState, apply_step, load_state, rescore
from services.qualification.lifecycle import LeadLifecycle, LifecyclePolicy
from services.qualification.model_registry import active_model
from services.qualification.models import lead_activity_facts, lead_facts, lead_states
from shared.consumer import HandlerContext, Handlers
from shared.events.payloads import (
    LeadActivity,
    LeadAssigned,
    LeadCaptured,
    LeadErased,
    LeadUpdated,
)
from shared.runtime import ServiceRuntime
from shared.settings import QualificationSettings


def policy_of(runtime: ServiceRuntime) -> LifecyclePolicy:
    settings = runtime.settings
    assert isinstance(settings, QualificationSettings)
    return LifecyclePolicy(recycle_cooldown=timedelta(days=settings.recycle_cooldown_days))


def handlers(runtime: ServiceRuntime) -> Handlers:
    """The handler map of the qualification consumer group."""
    policy = policy_of(runtime)
    outbox = runtime.outbox

    async def lead_captured(ctx: HandlerContext, event: LeadCaptured) -> None:
        lead_id = str(event.lead_id)
        if await load_state(ctx.session, lead_id, policy=policy) is not None:
            return
        profile = {
            **event.profile,
            "email_domain": event.email_domain,
            "email_kind": event.email_kind,
            "source": event.source,
            "channel": event.channel,
            "campaign": event.campaign,
        }
        await ctx.session.execute(
            insert(lead_facts).values(
                lead_id=lead_id, source=event.source, profile=profile, created_at=ctx.envelope.time
            )
        )
        state = LeadState(lead_id, LeadLifecycle(policy=policy), None, 0.0, None)
        at = ctx.envelope.time
        await apply_step(
            ctx.session, outbox, state, state.lifecycle.capture(event.source, at=at), new=True
        )
        await rescore(ctx.session, outbox, state, await active_model(ctx.session), now=at)

    async def lead_updated(ctx: HandlerContext, event: LeadUpdated) -> None:
        lead_id = str(event.lead_id)
        row = (
            await ctx.session.execute(
                select(lead_facts.c.profile).where(lead_facts.c.lead_id == lead_id)
            )
        ).first()
        if row is None or not event.changes:
            return
        await ctx.session.execute(
            update(lead_facts)
            .where(lead_facts.c.lead_id == lead_id)
            .values(profile={**row.profile, **event.changes})
        )
        await _rescore(ctx, lead_id)

    async def lead_activity(ctx: HandlerContext, event: LeadActivity) -> None:
        dialect = ctx.session.bind.dialect.name
        insert_for = pg_insert if dialect == "postgresql" else sqlite_insert
        await ctx.session.execute(
            insert_for(lead_activity_facts)
            .values(
                activity_id=str(event.activity_id),
                lead_id=str(event.lead_id),
                activity_type=event.activity_type,
                occurred_at=event.occurred_at,
                event_id=str(ctx.envelope.id),
            )
            .on_conflict_do_nothing()
        )
        await _rescore(ctx, str(event.lead_id))

    async def lead_assigned(ctx: HandlerContext, event: LeadAssigned) -> None:
        await ctx.session.execute(
            update(lead_states)
            .where(lead_states.c.lead_id == str(event.lead_id))
            .values(owner_id=event.owner_id)
        )

    async def lead_erased(ctx: HandlerContext, event: LeadErased) -> None:
        lead_id = str(event.lead_id)  # stages and scores are no personal data: they stay
        await ctx.session.execute(delete(lead_facts).where(lead_facts.c.lead_id == lead_id))
        await ctx.session.execute(
            delete(lead_activity_facts).where(lead_activity_facts.c.lead_id == lead_id)
        )

    async def _rescore(ctx: HandlerContext, lead_id: str) -> None:
        state = await load_state(ctx.session, lead_id, policy=policy)
        if state is not None:  # activity before capture: scored when the capture arrives
            await rescore(
                ctx.session, outbox, state, await active_model(ctx.session), now=ctx.envelope.time
            )

    return {
        LeadCaptured: [lead_captured],
        LeadUpdated: [lead_updated],
        LeadActivity: [lead_activity],
        LeadAssigned: [lead_assigned],
        LeadErased: [lead_erased],
    }

"""Qualification's event handlers: intake's facts and routing's owners drive the scores."""

from __future__ import annotations

from bisect import insort
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.qualification.lead_state import (
    ERASED,
    LeadState,
    Writes,
    announce,
    apply_step,
    load_histories,
    load_leads,
    load_profiles,
    load_state,
    rescore,
    stored_activities,
)
from services.qualification.lifecycle import LeadLifecycle, LifecyclePolicy
from services.qualification.model_registry import active_model
from services.qualification.models import (
    bant_assessments,
    lead_activity_facts,
    lead_facts,
    lead_owners,
    lead_states,
    stage_transitions,
)
from services.qualification.scoring import (
    ActivityFact,
    Contribution,
    chronological,
    fit_contributions,
    in_order,
    live_history,
    score,
)
from shared.bulk_writes import insert_many
from shared.events.payloads import (
    LeadActivity,
    LeadAssigned,
    LeadCaptured,
    LeadErased,
    LeadUpdated,
)
from shared.handler_context import Batched, Delivery, HandlerContext, Handlers
from shared.runtime import ServiceRuntime
from shared.settings.services import QualificationSettings


def policy_of(runtime: ServiceRuntime) -> LifecyclePolicy:
    settings = runtime.settings
    assert isinstance(settings, QualificationSettings)
    return LifecyclePolicy(recycle_cooldown=timedelta(days=settings.recycle_cooldown_days))


async def forget(session: AsyncSession, lead_id: str, *, at: datetime) -> None:
    """Erasure: facts go, notes are blanked; stages and scores (no personal data) stay."""
    await session.execute(delete(lead_facts).where(lead_facts.c.lead_id == lead_id))
    await session.execute(
        delete(lead_activity_facts).where(lead_activity_facts.c.lead_id == lead_id)
    )
    await session.execute(
        update(stage_transitions)
        .where(stage_transitions.c.lead_id == lead_id)
        .values(reason_text="")
    )
    await session.execute(
        update(bant_assessments).where(bant_assessments.c.lead_id == lead_id).values(assessment={})
    )
    erased = await session.execute(
        update(lead_states).where(lead_states.c.lead_id == lead_id).values(erased_at=at)
    )
    if not erased.rowcount:  # type: ignore[attr-defined]  # erased before we saw it: a tombstone
        await session.execute(
            insert(lead_states).values(
                lead_id=lead_id,
                stage="lead",
                entered_at=at,
                explanation=[],
                score=0.0,
                fit=0.0,
                engagement=0.0,
                erased_at=at,
            )
        )


FACT_COLUMNS = ("activity_id", "lead_id", "activity_type", "occurred_at", "event_id")


def handlers(runtime: ServiceRuntime) -> Handlers:
    """The handler map of the qualification consumer group."""
    policy = policy_of(runtime)
    outbox = runtime.outbox

    async def lead_captured(ctx: HandlerContext, event: LeadCaptured) -> None:
        lead_id = str(event.lead_id)
        if await _known(ctx, lead_id):  # a replayed capture, or a lead erased since
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
        owner = await ctx.session.scalar(  # routing may have spoken first
            select(lead_owners.c.owner_id).where(lead_owners.c.lead_id == lead_id)
        )
        state = LeadState(lead_id, LeadLifecycle(policy=policy), owner, 0.0, None)
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

    async def lead_activities(deliveries: Sequence[Delivery]) -> None:
        """Activities in bulk: one read of the leads, their profiles and histories, one write
        of the facts and of each lead's last score; every event still scored on its own, in
        order, with its own `lead.scored` (and MQL step) as if handled one by one."""
        session = deliveries[0][0].session
        # each event's ids as text once: (context, event, lead id, activity id, event id)
        events = [(c, e, str(e.lead_id), str(e.activity_id), c.event_id) for c, e in deliveries]
        leads = await load_leads(
            session, (lead_id for _, _, lead_id, _, _ in events), policy=policy
        )
        kept = [item for item in events if leads.get(item[2]) is not ERASED]
        if not kept:
            return
        live = [lead_id for lead_id, lead in leads.items() if isinstance(lead, LeadState)]
        model = await active_model(session)
        earliest = min(c.envelope.time for c, *_ in kept)
        profiles = await load_profiles(session, live)
        histories = await load_histories(
            session, live, live=live_history(model), now=earliest
        )  # what can no longer count is not read: the cost follows the live history only
        # an activity belongs to the lead whose fact was stored first (as the INSERT decides)
        claimed = await stored_activities(session, (item[3] for item in kept))
        await insert_many(  # facts of leads not captured yet wait here for their capture
            session,
            lead_activity_facts,
            FACT_COLUMNS,
            [
                (activity_id, lead_id, e.activity_type, e.occurred_at, event_id)
                for _, e, lead_id, activity_id, event_id in kept
            ],
            skip_conflicts=True,  # a redelivered activity: the first one stays
        )
        histories = {lead_id: chronological(h) for lead_id, h in histories.items()}
        writes = Writes()
        fits: dict[str, list[Contribution]] = {}  # a lead's profile does not change in a run
        for ctx, event, lead_id, activity_id, event_id in kept:
            first = activity_id not in claimed  # as the facts' INSERT: the first one stays
            claimed.add(activity_id)
            lead = leads.get(lead_id)
            if not isinstance(lead, LeadState):
                continue
            history = histories.setdefault(lead_id, [])
            if first:
                at = event.occurred_at
                at = at if at.tzinfo else at.replace(tzinfo=UTC)  # as stored, then read back
                fact = ActivityFact(activity_id, event.activity_type, at, event_id)
                insort(history, fact, key=in_order)  # kept in scoring's order: no sorting
            now = ctx.envelope.time
            if lead_id not in fits:
                fits[lead_id] = fit_contributions(model, profiles.get(lead_id, {}))
            result = score(model, {}, history, now=now, ordered=True, fit_parts=fits[lead_id])
            writes.scores[lead_id] = (result, now)
            await announce(session, outbox, lead, result, now=now, trace=ctx.trace, writes=writes)
        await writes.write(session)

    async def lead_assigned(ctx: HandlerContext, event: LeadAssigned) -> None:
        lead_id = str(event.lead_id)
        insert_for = pg_insert if ctx.session.bind.dialect.name == "postgresql" else sqlite_insert
        upsert = insert_for(lead_owners).values(lead_id=lead_id, owner_id=event.owner_id)
        await ctx.session.execute(
            upsert.on_conflict_do_update(
                index_elements=[lead_owners.c.lead_id], set_={"owner_id": event.owner_id}
            )
        )
        await ctx.session.execute(
            update(lead_states)
            .where(
                lead_states.c.lead_id == lead_id, lead_states.c.stage.not_in(("lead", "nurture"))
            )
            .values(owner_id=event.owner_id)
        )

    async def lead_erased(ctx: HandlerContext, event: LeadErased) -> None:
        await forget(ctx.session, str(event.lead_id), at=ctx.envelope.time)

    async def _known(ctx: HandlerContext, lead_id: str) -> bool:
        return (
            await ctx.session.scalar(
                select(lead_states.c.lead_id).where(lead_states.c.lead_id == lead_id)
            )
            is not None
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
        LeadActivity: Batched(lead_activities),
        LeadAssigned: [lead_assigned],
        LeadErased: [lead_erased],
    }

"""Activity events handled in runs (one read, one write per batch) leave exactly the effects of
handling them one by one: the same scores, explanations, stages, and events on the bus."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select

from services.qualification.models import lead_activity_facts, lead_states, stage_transitions
from shared.bus.port import Record
from shared.consumer import EventConsumer
from shared.events.catalog import CATALOG
from shared.events.codec import build_envelope, to_binary
from shared.events.payloads import (
    LeadActivity,
    LeadAssigned,
    LeadCaptured,
    LeadErased,
    LeadScored,
)
from shared.inbox import Inbox
from tests.api.conftest import Qualification, event
from tests.support import eventually

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
STRONG_FIT = {"company_size": 400, "seniority": "vp", "job_title": "VP Ops", "country": "DE"}


def scenario(population: str) -> tuple[dict[str, str], list[tuple[BaseModel, datetime]]]:
    """The same story for every population, with its own lead and activity ids: captures,
    repeated and redelivered activities, activity before capture, an MQL crossing, an
    owner change, an unsubscribe, an activity long decayed, an activity id reused for
    another lead, and an erasure with a late activity."""
    names = ("hot", "early", "erased", "cold")
    leads = {name: uuid.uuid5(uuid.NAMESPACE_URL, f"{population}/{name}") for name in names}
    acts = iter(uuid.uuid5(uuid.NAMESPACE_URL, f"{population}/a{i}") for i in range(100))
    events: list[tuple[BaseModel, datetime]] = []
    clock = iter(T0 + timedelta(minutes=m) for m in range(1000))

    def capture(name: str, **profile: Any) -> None:
        payload = LeadCaptured(
            lead_id=leads[name], source="marketing", email_domain="acme.com", profile=profile
        )
        events.append((payload, next(clock)))

    def act(name: str, activity_type: str, days_ago: float, activity_id: uuid.UUID | None = None):
        at = next(clock)
        payload = LeadActivity(
            lead_id=leads[name],
            activity_id=activity_id or next(acts),
            activity_type=activity_type,
            occurred_at=at - timedelta(days=days_ago),
        )
        events.append((payload, at))
        return payload.activity_id

    act("early", "pricing_page_view", 3)  # before its capture: scored when it comes
    capture("hot", **STRONG_FIT)
    capture("cold", company_size=5)
    repeated = act("hot", "page_view", 10)
    act("hot", "page_view", 0.5)
    act("hot", "page_view", 0.5, activity_id=repeated)  # the same activity, redelivered
    act("cold", "email_open", 40)
    capture("early", **STRONG_FIT)
    act("early", "webinar_attended", 1)
    for days in (6, 5, 4, 3, 2):
        act("hot", "pricing_page_view", days)  # the cap per window bites
    act("hot", "demo_request", 0)  # crosses the MQL threshold
    events.append(
        (
            LeadAssigned(lead_id=leads["hot"], owner_id="rep-1", team_id="t", stage="mql", why="t"),
            next(clock),
        )
    )
    act("hot", "email_unsubscribe", 0)
    capture("erased")
    act("erased", "content_download", 2)
    events.append((LeadErased(lead_id=leads["erased"], requested_by="dpo"), next(clock)))
    act("erased", "demo_request", 0)  # after erasure: ignored
    act("cold", "email_click", 1)
    act("early", "email_click", 0.1)
    act("hot", "page_view", 1000)  # long decayed: stored, never read again
    act("cold", "demo_request", 0, activity_id=repeated)  # hot's activity id: stays hot's
    return {str(v): k for k, v in leads.items()}, events


def records(events: list[tuple[BaseModel, datetime]]) -> list[Record]:
    out = []
    for offset, (payload, at) in enumerate(events):
        envelope = build_envelope(
            CATALOG,
            payload,
            source_service="intake",
            subject=str(payload.lead_id),  # type: ignore[attr-defined]
            sequence=offset + 1,
            time=at,
        )
        key, headers, value = to_binary(envelope)
        topic = CATALOG.for_payload(payload).topic
        out.append(Record(topic, 0, offset, key, value, headers))
    return out


async def published(q: Qualification, topic: str) -> list[dict[str, Any]]:
    """Every event on the topic, once the relay has shipped all the outbox holds."""
    outbox = q.runtime.outbox.table

    async def shipped() -> bool:
        async with q.runtime.db.engine.connect() as conn:
            return await conn.scalar(select(func.count()).select_from(outbox)) == 0

    await eventually(shipped)
    subscription = q.runtime.bus.subscribe(group=f"t-{uuid.uuid4().hex}", topics=[topic])
    await subscription.start()
    records: list[Record] = []
    while batch := await subscription.poll(max_records=500, timeout=1.0):
        records.extend(batch)
    await subscription.close()
    return [event(r) for r in records]


async def outcome(q: Qualification, names: dict[str, str]) -> dict[str, Any]:
    """What the population's leads ended as, by name (ids and clocks of our own left out)."""
    async with q.runtime.db.engine.connect() as conn:
        states = (
            await conn.execute(select(lead_states).where(lead_states.c.lead_id.in_(list(names))))
        ).all()
        transitions = (
            await conn.execute(
                select(stage_transitions)
                .where(stage_transitions.c.lead_id.in_(list(names)))
                .order_by(stage_transitions.c.id)
            )
        ).all()
        facts = (
            await conn.execute(
                select(lead_activity_facts.c.lead_id).where(
                    lead_activity_facts.c.lead_id.in_(list(names))
                )
            )
        ).all()
    scored = await published(q, "handoff.lead.scored")
    for e in scored:  # the hot path encodes these itself: they must read as the model says
        LeadScored.model_validate(e["data"])
    changes = await published(q, "handoff.lead.stage")
    return {
        "states": sorted(
            (
                names[s.lead_id],
                s.stage,
                s.owner_id,
                s.score,
                s.fit,
                s.engagement,
                [(c["rule_id"], c["points"]) for c in s.explanation],
                s.erased_at is not None,
            )
            for s in states
        ),
        "transitions": [
            (names[t.lead_id], t.from_stage, t.to_stage, t.reason_code, t.model_version)
            for t in transitions
        ],
        "facts": sorted(names[f.lead_id] for f in facts),
        # the bus keeps each lead's order (not one across leads): compared lead by lead
        "scored": sorted(
            [
                (
                    names[e["subject"]],
                    e["data"]["score"],
                    e["data"]["delta"],
                    len(e["data"]["explanation"]),
                )
                for e in scored
                if e["subject"] in names
            ],
            key=lambda item: item[0],
        ),
        "stage_changes": sorted(
            [
                (names[e["subject"]], e["data"]["from_stage"], e["data"]["to_stage"])
                for e in changes
                if e["subject"] in names
            ],
            key=lambda item: item[0],
        ),
    }


async def test_a_batch_has_the_effects_of_its_events_one_by_one(
    qualification: Qualification,
) -> None:
    runtime = qualification.runtime
    definition = runtime.definition
    assert definition.handlers is not None
    consumer = EventConsumer(
        service="qualification",
        group="qualification-batch-test",
        bus=runtime.bus,
        db=runtime.db,
        inbox=Inbox(definition.inbox_table),
        catalog=CATALOG,
        handlers=definition.handlers(runtime),
        outbox=runtime.outbox,
    )
    alone_names, alone_events = scenario("alone")
    batch_names, batch_events = scenario("batch")

    for record in records(alone_events):
        await consumer.process([record])
    batch_records = records(batch_events)
    await consumer.process(batch_records)
    await consumer.process(batch_records)  # redelivered: the inbox drops all of it

    alone = await outcome(qualification, alone_names)
    batch = await outcome(qualification, batch_names)
    assert batch == alone
    stages = {name: stage for name, stage, *_ in alone["states"]}
    assert stages == {"hot": "mql", "early": "mql", "erased": "lead", "cold": "lead"}
    assert alone["facts"].count("erased") == 0 and alone["facts"].count("hot") == 10
    assert alone["facts"].count("cold") == 2  # the reused activity id was not cold's
    cold = next(state for state in alone["states"] if state[0] == "cold")
    assert "demo_request" not in [rule for rule, _points in cold[6]]  # nor did it count
    assert len(alone["scored"]) == 21  # 4 captures + 17 activities of captured leads

"""Qualification: explained scores, the lifecycle both teams agreed, who may act."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from services.qualification.models import lead_activity_facts, stage_transitions
from shared.events.payloads import LeadActivity, LeadAssigned, LeadCaptured, LeadErased
from tests.api.conftest import Qualification

STRONG_FIT = {"company_size": 400, "seniority": "vp", "job_title": "VP Ops", "country": "DE"}


async def capture(
    q: Qualification,
    *,
    source: str = "marketing",
    kind: str = "business",
    profile: dict[str, Any] | None = None,
) -> str:
    lead = uuid.uuid4()
    await q.publish(
        LeadCaptured(
            lead_id=lead,
            source=source,
            email_domain="acme.com",
            email_kind=kind,
            profile=profile or {},
        ),
        source="intake",
    )
    return str(lead)


async def act(q: Qualification, lead: str, activity_type: str) -> None:
    await q.publish(
        LeadActivity(
            lead_id=uuid.UUID(lead),
            activity_id=uuid.uuid4(),
            activity_type=activity_type,
            occurred_at=datetime.now(UTC),
        ),
        source="intake",
    )


async def state(q: Qualification, lead: str, stage: str | None = None) -> dict[str, Any]:
    """The lead's qualification once the consumer has caught up (and reached `stage`)."""
    for _ in range(200):
        response = await q.client.get(f"/v1/leads/{lead}/qualification", headers=q.auth("viewer"))
        if response.status_code == 200 and stage in (None, response.json()["stage"]):
            return dict(response.json())
        await asyncio.sleep(0.05)
    raise AssertionError(f"lead {lead} never reached {stage}: {response.text}")


async def mql_owned_by(q: Qualification, owner: str) -> str:
    lead = await capture(q, profile=STRONG_FIT)
    await act(q, lead, "demo_request")
    await state(q, lead, "mql")
    await q.publish(
        LeadAssigned(
            lead_id=uuid.UUID(lead), owner_id=owner, team_id="emea", stage="mql", why="round robin"
        ),
        source="routing",
    )
    for _ in range(200):
        if (await state(q, lead))["owner_id"] == owner:
            return lead
        await asyncio.sleep(0.05)
    raise AssertionError("never assigned")


async def test_a_captured_lead_is_scored_with_the_rules_that_fired(
    qualification: Qualification,
) -> None:
    lead = await capture(qualification, kind="freemail", profile={"company_size": 5})
    result = await state(qualification, lead, "lead")
    rules = {c["rule_id"]: c["points"] for c in result["explanation"]}
    assert rules == {"free_email": -10, "company_size_micro": -5}
    assert result["score"] == sum(rules.values())
    assert [h["to"] for h in result["history"]] == ["lead"]


async def test_engagement_over_the_threshold_makes_an_mql_and_says_why(
    qualification: Qualification,
) -> None:
    lead = await capture(qualification, profile=STRONG_FIT)
    await act(qualification, lead, "demo_request")
    result = await state(qualification, lead, "mql")
    changes = await qualification.events("handoff.lead.stage", 2)
    assert result["history"][-1]["reason"]["code"] == "score_threshold"
    assert result["history"][-1]["model_version"] == "default-1"
    assert [c["data"]["to_stage"] for c in changes] == ["lead", "mql"]


async def test_a_sales_generated_lead_enters_as_sgl(qualification: Qualification) -> None:
    lead = await capture(qualification, source="sales")
    assert (await state(qualification, lead, "sgl"))["history"][0]["to"] == "sgl"


async def test_only_the_owner_or_a_manager_may_accept(qualification: Qualification) -> None:
    lead = await mql_owned_by(qualification, "rep-ana")
    other = await qualification.client.post(
        f"/v1/leads/{lead}/accept", json={}, headers=qualification.auth("sales")
    )
    owner = await qualification.client.post(
        f"/v1/leads/{lead}/accept",
        json={"note": "go"},
        headers=qualification.auth("sales", name="rep-ana"),
    )
    assert other.status_code == 403
    assert owner.status_code == 200 and owner.json()["stage"] == "sal"


async def test_an_illegal_command_is_a_409_listing_what_is_allowed(
    qualification: Qualification,
) -> None:
    lead = await capture(qualification, kind="freemail")
    await state(qualification, lead, "lead")
    response = await qualification.client.post(
        f"/v1/leads/{lead}/accept", json={}, headers=qualification.auth("manager")
    )
    assert response.status_code == 409
    assert response.json()["allowed"] == ["score_crossed"]


async def test_rejecting_as_spam_disqualifies_and_no_budget_goes_back_to_nurture(
    qualification: Qualification,
) -> None:
    manager = qualification.auth("manager")
    spam, poor = await mql_owned_by(qualification, "r1"), await mql_owned_by(qualification, "r2")
    a = await qualification.client.post(
        f"/v1/leads/{spam}/reject", headers=manager, json={"reason_code": "spam"}
    )
    b = await qualification.client.post(
        f"/v1/leads/{poor}/reject",
        headers=manager,
        json={"reason_code": "no_budget", "text": "next year"},
    )
    assert (a.json()["stage"], b.json()["stage"]) == ("disqualified", "nurture")


async def test_bant_decides_sql_or_nurture_and_lists_what_was_unmet(
    qualification: Qualification,
) -> None:
    manager = qualification.auth("manager")
    good, weak = await mql_owned_by(qualification, "r1"), await mql_owned_by(qualification, "r2")
    for lead in (good, weak):
        await qualification.client.post(f"/v1/leads/{lead}/accept", json={}, headers=manager)
    met = {"status": "met"}
    passed = await qualification.client.put(
        f"/v1/leads/{good}/bant",
        headers=manager,
        json={"budget": met, "authority": met, "need": met, "timeframe": {"status": "unknown"}},
    )
    failed = await qualification.client.put(
        f"/v1/leads/{weak}/bant",
        headers=manager,
        json={"budget": met, "need": {"status": "not_met", "note": "happy with Excel"}},
    )
    assert passed.json()["stage"] == "sql"
    assert failed.json()["stage"] == "nurture"
    assert "need" in failed.json()["bant"]["unmet"]


async def test_a_won_deal_needs_its_amount_and_a_lost_one_is_recycled(
    qualification: Qualification,
) -> None:
    manager = qualification.auth("manager")
    lead = await mql_owned_by(qualification, "r1")
    await qualification.client.post(f"/v1/leads/{lead}/accept", json={}, headers=manager)
    met = {"status": "met"}
    await qualification.client.put(
        f"/v1/leads/{lead}/bant",
        headers=manager,
        json={"budget": met, "authority": met, "need": met, "timeframe": met},
    )
    incomplete = await qualification.client.post(
        f"/v1/leads/{lead}/outcome", headers=manager, json={"result": "won"}
    )
    lost = await qualification.client.post(
        f"/v1/leads/{lead}/outcome",
        headers=manager,
        json={"result": "lost", "reason_code": "price"},
    )
    assert incomplete.status_code == 422
    assert {e["field"] for e in incomplete.json()["errors"]} == {"amount", "currency"}
    assert [t["to"] for t in lost.json()["transitions"]] == ["lost", "nurture"]


async def test_a_recycled_lead_is_marketings_again_and_its_old_rep_cannot_accept_it(
    qualification: Qualification,
) -> None:
    q = qualification
    lead = await mql_owned_by(q, "rep-old")
    await q.client.post(
        f"/v1/leads/{lead}/reject", json={"reason_code": "not_now"}, headers=q.auth("manager")
    )
    assert (await state(q, lead, "nurture"))["owner_id"] is None


async def test_an_assignment_that_arrives_before_the_capture_is_kept(
    qualification: Qualification,
) -> None:
    q = qualification
    lead = uuid.uuid4()
    await q.publish(
        LeadAssigned(
            lead_id=lead, owner_id="rep-early", team_id="emea", stage="sgl", why="account owner"
        ),
        source="routing",
    )
    await q.publish(
        LeadCaptured(lead_id=lead, source="sales", email_kind="business", email_domain="acme.com"),
        source="intake",
    )
    for _ in range(200):
        result = await state(q, str(lead))
        if result["owner_id"] == "rep-early":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"owner lost: {result}")


async def test_after_erasure_late_activities_are_ignored_and_notes_are_blanked(
    qualification: Qualification,
) -> None:
    q = qualification
    lead = await mql_owned_by(q, "r1")
    await q.client.post(
        f"/v1/leads/{lead}/reject",
        headers=q.auth("manager"),
        json={"reason_code": "no_budget", "text": "Ana said her boss Bob..."},
    )
    await q.consumed(
        await q.publish(LeadErased(lead_id=uuid.UUID(lead), requested_by="dpo"), source="intake")
    )
    late = LeadActivity(
        lead_id=uuid.UUID(lead),
        activity_id=uuid.uuid4(),
        activity_type="demo_request",
        occurred_at=datetime.now(UTC),
    )
    await q.consumed(await q.publish(late, source="intake"))
    async with q.runtime.db.engine.connect() as conn:
        facts = await conn.scalar(
            select(func.count())
            .select_from(lead_activity_facts)
            .where(lead_activity_facts.c.lead_id == lead)
        )
        notes = list(
            (
                await conn.execute(
                    select(stage_transitions.c.reason_text).where(
                        stage_transitions.c.lead_id == lead
                    )
                )
            ).scalars()
        )
    assert facts == 0
    assert all(note == "" for note in notes)

"""`handoff demo`'s made-up pipeline: valid to the API, shaped like real traffic, repeatable."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from services.intake.canonical import ActivityIn, LeadIn, account_domain_of
from shared.demo import plan

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_every_lead_and_activity_the_demo_sends_is_valid_to_the_api() -> None:
    demo = plan(200, seed=7, now=NOW)

    leads = [LeadIn.model_validate(lead) for lead in demo.marketing + demo.sales]
    activities = [ActivityIn.model_validate(a) for a in demo.activities]

    assert (len(demo.marketing), len(demo.sales)) == (180, 20)
    assert {lead.source for lead in leads} == {"marketing", "sales"}
    assert len({lead.email for lead in leads}) == 200  # one lead per person
    assert all(a.occurred_at <= NOW for a in activities)
    kinds = Counter(a.activity_type for a in activities)
    assert kinds["page_view"] > kinds["meeting_booked"] > 0


def test_people_share_accounts_and_some_use_free_mail() -> None:
    demo = plan(200, seed=7, now=NOW)
    leads = [LeadIn.model_validate(lead) for lead in demo.marketing + demo.sales]

    accounts = Counter(account_domain_of(lead.email, lead.company_domain) for lead in leads)
    free = [lead for lead in leads if lead.email and lead.email.endswith("@gmail.com")]

    assert 20 <= len(accounts) <= 50 and max(accounts.values()) >= 4
    assert free and all(account_domain_of(lead.email, None) is None for lead in free)


def test_anonymous_visitors_browse_then_identify_with_a_form() -> None:
    demo = plan(200, seed=7, now=NOW)

    visitors = [a for a in demo.activities if a.get("visitor_id")]
    anonymous = [a for a in visitors if "email" not in a]
    identifying = [a for a in visitors if "email" in a]

    assert anonymous and identifying
    assert {a["visitor_id"] for a in anonymous} == {a["visitor_id"] for a in identifying}
    assert all(a["activity_type"] == "form_submit" for a in identifying)


def test_the_same_seed_makes_the_same_people() -> None:
    assert plan(50, seed=3, now=NOW) == plan(50, seed=3, now=NOW)
    assert plan(50, seed=3, now=NOW).marketing != plan(50, seed=4, now=NOW).marketing

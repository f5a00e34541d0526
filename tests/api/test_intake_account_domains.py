"""Accounts through the API: a bare public suffix keys no account, relays make none and
each Microsoft 365 tenant makes its own."""

from __future__ import annotations

from tests.api.conftest import Intake


async def test_a_bare_public_suffix_as_company_domain_keys_no_account(intake: Intake) -> None:
    """`co.uk` in a form's company field: the lead is kept, its account keyed by its email's
    domain, and no account `co.uk` gathers everyone who typed it."""
    auth = intake.auth()
    answers = [
        (await intake.client.post("/v1/leads", headers=auth, json=lead)).json()
        for lead in (
            {"email": "x@ex.com", "company_domain": "co.uk"},
            {"email": "y@why.com", "company_domain": "co.uk"},
            {"email": "z@ex.com"},
        )
    ]

    x, y, z = (a["account_id"] for a in answers)
    assert x == z and x != y and None not in (x, y)
    lead = await intake.client.get(f"/v1/leads/{answers[0]['lead_id']}", headers=auth)
    assert lead.json()["account"]["domain"] == "ex.com"


async def test_relay_addresses_make_no_account_and_each_tenant_makes_its_own(
    intake: Intake,
) -> None:
    auth = intake.auth()
    emails = [
        "x7fk2@privaterelay.appleid.com",
        "q9zz1@privaterelay.appleid.com",
        "abc@duck.com",
        "ana@contoso.onmicrosoft.com",
        "bob@fabrikam.onmicrosoft.com",
    ]
    answers = [
        (await intake.client.post("/v1/leads", json={"email": e}, headers=auth)).json()
        for e in emails
    ]

    apple, apple_too, duck, contoso, fabrikam = (a["account_id"] for a in answers)
    assert (apple, apple_too, duck) == (None, None, None)
    assert contoso is not None and fabrikam is not None and contoso != fabrikam
    lead = (await intake.client.get(f"/v1/leads/{answers[3]['lead_id']}", headers=auth)).json()
    assert lead["account"]["domain"] == "contoso.onmicrosoft.com"

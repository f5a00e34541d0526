"""Accounts through the API: a bare public suffix is no company's domain, relays make no
account and each Microsoft 365 tenant makes its own."""

from __future__ import annotations

from tests.api.conftest import Intake

SUFFIX_REFUSED = "'co.uk' is a public suffix, under which companies register their domains"


async def test_a_bare_public_suffix_as_company_domain_is_a_422_naming_the_field(
    intake: Intake,
) -> None:
    response = await intake.client.post(
        "/v1/leads", headers=intake.auth(), json={"email": "x@ex.com", "company_domain": "co.uk"}
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == "company_domain"
    assert error["reason"].startswith(SUFFIX_REFUSED)
    assert await intake.events("handoff.lead.captured", 0) == []


async def test_an_import_row_naming_a_bare_public_suffix_fails_alone(intake: Intake) -> None:
    rows = (
        b'{"email": "x@ex.com", "company_domain": "co.uk"}\n'
        b'{"email": "y@why.co.uk", "company_domain": "why.co.uk"}\n'
    )
    response = await intake.client.post(
        "/v1/leads/import",
        content=rows,
        headers={**intake.auth(), "content-type": "application/x-ndjson"},
    )

    summary = response.json()
    assert (summary["created"], summary["failed"]) == (1, 1)
    [error] = summary["errors"]
    assert (error["line"], error["field"]) == (1, "company_domain")
    assert error["reason"].startswith(SUFFIX_REFUSED)


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

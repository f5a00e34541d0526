"""A company size is stored as the number of employees it says, or refused saying why; an
inbound source may map a field only to a field its provider makes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.api.conftest import Intake

SHARED_TOKEN = "shared-token-0123456789"  # a HubSpot app secret or a Marketo token
STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-secret-32bytes").decode()


async def add_source(intake: Intake, **source: object) -> httpx.Response:
    return await intake.client.post(
        "/v1/inbound-sources", json=source, headers=intake.auth("admin")
    )


async def sizes_captured(intake: Intake, count: int) -> dict[str, Any]:
    """The company size each captured lead was announced with, by its email's domain."""
    events = await intake.events("handoff.lead.captured", count)
    return {e["data"]["email_domain"]: e["data"]["profile"].get("company_size") for e in events}


async def test_an_import_reads_thousands_separators_and_refuses_a_fraction(
    intake: Intake,
) -> None:
    csv = (
        "email,company,company_size\r\n"
        "ana@acme.de,Acme GmbH,1.000\r\n"
        "bob@beta.de,Beta AG,10.000\r\n"
        "cy@gamma.fr,Gamma SA,2\u202f500\r\n"
        'di@delta.com,Delta Inc,"10,000"\r\n'
        'ed@eps.de,Eps GmbH,"1,5"\r\n'
    ).encode()
    response = await intake.client.post(
        "/v1/leads/import", content=csv, headers={**intake.auth(), "content-type": "text/csv"}
    )

    summary = response.json()
    assert (summary["created"], summary["failed"]) == (4, 1)
    (error,) = summary["errors"]
    assert (error["line"], error["field"]) == (6, "company_size")
    assert "whole number of employees" in error["reason"]
    assert await sizes_captured(intake, 4) == {
        "acme.de": 1000,
        "beta.de": 10_000,
        "gamma.fr": 2500,
        "delta.com": 10_000,
    }


@pytest.mark.parametrize(("given", "says"), [(True, "not true"), (1.5, "not 1.5")])
async def test_a_company_size_that_is_no_whole_number_is_a_422_naming_it(
    intake: Intake, given: object, says: str
) -> None:
    response = await intake.client.post(
        "/v1/leads", json={"email": "cy@gamma.com", "company_size": given}, headers=intake.auth()
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    (error,) = response.json()["errors"]
    assert error["field"] == "company_size"
    assert says in error["reason"]
    assert await intake.events("handoff.lead.captured", 0) == []


async def test_a_company_size_sent_as_a_whole_float_is_that_many_employees(
    intake: Intake,
) -> None:
    response = await intake.client.post(
        "/v1/leads", json={"email": "ana@acme.com", "company_size": 250.0}, headers=intake.auth()
    )

    assert response.status_code == 201
    assert await sizes_captured(intake, 1) == {"acme.com": 250}


@pytest.mark.parametrize(
    ("provider", "target"),
    [("marketo", "lead_id"), ("marketo", "activity_type"), ("hubspot", "occurred_at")],
)
async def test_a_lead_only_source_mapping_to_an_activitys_field_is_refused_when_configured(
    intake: Intake, provider: str, target: str
) -> None:
    response = await add_source(
        intake, name="src", provider=provider, secret=SHARED_TOKEN, field_map={"Lead ID": target}
    )
    listed = await intake.client.get("/v1/inbound-sources", headers=intake.auth("admin"))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    (error,) = response.json()["errors"]
    assert error["field"] == "field_map.Lead ID"
    assert f"a {provider} source makes leads only" in error["reason"]
    assert "company_size" in error["reason"]  # what may be mapped
    assert listed.json() == []


async def test_a_marketo_source_mapping_to_lead_fields_reads_a_european_headcount(
    intake: Intake,
) -> None:
    field_map = {"Employees": "company_size", "SFDC": "external_ids.salesforce", "T": "custom.t"}
    created = await add_source(
        intake, name="mkto", provider="marketo", secret=SHARED_TOKEN, field_map=field_map
    )
    body = json.dumps({"email": "m@acme.de", "Employees": "1.000", "SFDC": "00Q1", "T": "x"})
    answer = await intake.client.post(
        "/v1/webhooks/marketo", content=body, headers={"x-handoff-token": SHARED_TOKEN}
    )

    assert created.status_code == 201
    assert (answer.json()["accepted"], answer.json()["failed"]) == (1, [])
    assert await sizes_captured(intake, 1) == {"acme.de": 1000}


async def test_a_standard_source_may_map_to_an_activitys_fields(intake: Intake) -> None:
    field_map = {"kind": "activity_type", "at": "occurred_at", "visitor": "visitor_id"}
    created = await add_source(
        intake, name="site", provider="standard", secret=STANDARD_SECRET, field_map=field_map
    )
    now = datetime.now(UTC)
    data = {"kind": "page_view", "at": "2026-11-01T10:00:00Z", "visitor": "v-7"}
    body = json.dumps({"type": "activity.recorded", "data": data})
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(STANDARD_SECRET).sign("msg_1", now, body),
    }
    answer = await intake.client.post("/v1/webhooks/standard", content=body, headers=headers)

    assert created.status_code == 201
    assert (answer.json()["accepted"], answer.json()["failed"]) == (1, [])

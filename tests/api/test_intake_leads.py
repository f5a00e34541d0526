"""Capturing leads through the API: normalized, one per person, announced on the bus."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.intake.idempotency import StoredAnswer, raw_hash, remember_answer
from tests.api.conftest import Intake

ANA = {
    "email": "  Ana.Souza@ACME.com ",
    "first_name": "Ana",
    "last_name": "Souza",
    "phone": "030 1234567",
    "country": "Germany",
    "company": "Acme GmbH",
    "job_title": "Head of Ops",
    "company_size": 250,
    "channel": "web_form",
    "campaign": "q4-webinar",
    "external_ids": {"hubspot": "501"},
}


async def lead_view(intake: Intake, lead_id: str) -> dict[str, Any]:
    """`GET /v1/leads/{id}`, as an admin sees it."""
    response = await intake.client.get(f"/v1/leads/{lead_id}", headers=intake.auth())
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_new_lead_is_stored_normalized_and_announced_without_personal_data(
    intake: Intake,
) -> None:
    response = await intake.client.post("/v1/leads", json=ANA, headers=intake.auth())
    assert response.status_code == 201
    lead_id = response.json()["lead_id"]

    stored = await lead_view(intake, lead_id)
    (event,) = await intake.events("handoff.lead.captured", 1)

    assert stored["email"] == "ana.souza@acme.com"
    assert stored["profile"]["phone"] == "+49301234567"
    assert stored["profile"]["country"] == "DE"
    assert stored["account"]["domain"] == "acme.com"
    assert event["key"] == lead_id and event["type"] == "handoff.lead.captured.v1"
    assert event["data"]["email_domain"] == "acme.com"
    assert event["data"]["account_id"] == stored["account"]["id"]
    assert "email" not in event["data"] and "first_name" not in event["data"]["profile"]
    # times with their offset, on SQLite as on PostgreSQL
    created = datetime.fromisoformat(stored["created_at"])
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)


async def test_capturing_the_same_person_again_updates_only_what_changed(intake: Intake) -> None:
    first = await intake.client.post("/v1/leads", json=ANA, headers=intake.auth())
    again = await intake.client.post(
        "/v1/leads",
        headers=intake.auth(),
        json={**ANA, "email": "ANA.SOUZA@acme.com", "job_title": "COO"},
    )

    assert again.status_code == 200
    assert again.json()["lead_id"] == first.json()["lead_id"]
    assert again.json()["changed_fields"] == ["job_title"]
    captured, updated = await intake.events("handoff.lead.captured", 2)
    assert updated["type"] == "handoff.lead.updated.v1"
    assert updated["data"]["changes"] == {"job_title": "COO"}
    assert updated["sequence"] > captured["sequence"]


async def test_a_marketing_sync_does_not_overwrite_what_sales_entered(intake: Intake) -> None:
    sales = {"email": "raj@globex.io", "job_title": "CFO", "source": "sales"}
    await intake.client.post("/v1/leads", json=sales, headers=intake.auth("sales"))
    sync = await intake.client.post(
        "/v1/leads",
        headers=intake.auth("marketing"),
        json={"email": "raj@globex.io", "job_title": "Finance", "industry": "Retail"},
    )

    assert sync.json()["protected_fields"] == ["job_title"]
    assert sync.json()["changed_fields"] == ["industry"]
    stored = await lead_view(intake, sync.json()["lead_id"])
    assert stored["profile"]["job_title"] == "CFO"


async def test_what_a_salesperson_enters_is_sales_owned_without_saying_so(intake: Intake) -> None:
    entered = await intake.client.post(
        "/v1/leads",
        headers=intake.auth("sales"),
        json={"email": "mei@initrode.com", "job_title": "CFO"},
    )
    sync = await intake.client.post(
        "/v1/leads",
        headers=intake.auth("marketing"),
        json={"email": "mei@initrode.com", "job_title": "Intern"},
    )

    (captured,) = await intake.events("handoff.lead.captured", 1)
    assert captured["data"]["source"] == "sales"
    assert entered.status_code == 201
    assert sync.json()["protected_fields"] == ["job_title"]


async def test_sales_entering_the_value_marketing_had_makes_it_sales_owned(
    intake: Intake,
) -> None:
    lead = {"email": "ivy@umbrella.com", "job_title": "CFO"}
    await intake.client.post("/v1/leads", json=lead, headers=intake.auth("marketing"))
    confirmed = await intake.client.post("/v1/leads", json=lead, headers=intake.auth("sales"))
    sync = await intake.client.post(
        "/v1/leads",
        headers=intake.auth("marketing"),
        json={"email": "ivy@umbrella.com", "job_title": "Finance", "industry": "Retail"},
    )

    assert confirmed.status_code == 200 and confirmed.json()["changed_fields"] == []
    assert sync.json()["protected_fields"] == ["job_title"]
    assert sync.json()["changed_fields"] == ["industry"]
    stored = await lead_view(intake, sync.json()["lead_id"])
    assert stored["profile"]["job_title"] == "CFO"
    # the confirmation changed nothing anyone reads on the bus: the next event is the sync's
    _captured, updated = await intake.events("handoff.lead.captured", 2)
    assert updated["data"]["changes"] == {"industry": "Retail"}


async def test_linking_a_lead_to_another_platform_is_announced(intake: Intake) -> None:
    first = await intake.client.post(
        "/v1/leads", headers=intake.auth(), json={"email": "lin@acme.com", "first_name": "Lin"}
    )
    linked = await intake.client.post(
        "/v1/leads",
        headers=intake.auth(),
        json={"email": "lin@acme.com", "first_name": "Lin", "external_ids": {"hubspot": "88"}},
    )

    assert linked.status_code == 200 and linked.json()["changed_fields"] == []
    captured, updated = await intake.events("handoff.lead.captured", 2)
    assert updated["type"] == "handoff.lead.updated.v1"
    assert updated["subject"] == first.json()["lead_id"]
    assert updated["data"]["external_ids"] == {"hubspot": "88"}
    assert updated["data"]["changes"] == {}
    assert captured["data"]["external_ids"] == {}


async def test_a_national_number_impossible_in_the_leads_country_says_why(
    intake: Intake,
) -> None:
    lead = {"email": "ute@acme.de", "country": "DE"}
    await intake.client.post("/v1/leads", headers=intake.auth(), json=lead)
    refused = await intake.client.post(
        "/v1/leads", headers=intake.auth(), json={"email": "ute@acme.de", "phone": "12"}
    )

    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {
            "field": "phone",
            "reason": "'12' is not a possible phone number in DE "
            "(a local number: give its area code)",
        }
    ]


async def test_an_empty_external_id_is_refused_and_merges_no_one(intake: Intake) -> None:
    ana = await intake.client.post(
        "/v1/leads",
        headers=intake.auth(),
        json={"email": "ana@acme.com", "external_ids": {"crm": "7"}},
    )
    blank = await intake.client.post(
        "/v1/leads",
        headers=intake.auth(),
        json={"email": "bob@globex.io", "external_ids": {"hubspot": " "}},
    )

    assert blank.status_code == 422
    assert blank.json()["errors"] == [
        {"field": "external_ids.hubspot", "reason": "String should have at least 1 character"}
    ]
    stored = await lead_view(intake, ana.json()["lead_id"])
    assert stored["email"] == "ana@acme.com"


async def test_a_too_long_custom_attribute_is_named_in_the_error(intake: Intake) -> None:
    response = await intake.client.post(
        "/v1/leads",
        headers=intake.auth(),
        json={"email": "ana@acme.com", "custom": {"notes": "x" * 1001, "tier": "gold"}},
    )

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "custom.notes", "reason": "at most 1000 characters"}
    ]


@pytest.mark.parametrize(("value", "kind"), [({"a": 1}, "an object"), ([1, 2], "a list")])
async def test_a_custom_attribute_holding_an_object_is_one_error_naming_it(
    intake: Intake, value: object, kind: str
) -> None:
    lead = await intake.client.post(
        "/v1/leads", headers=intake.auth(), json={"email": "c@acme.com", "custom": {"x": value}}
    )
    activity = await intake.client.post(
        "/v1/activities",
        headers=intake.auth(),
        json={"email": "c@acme.com", "activity_type": "page_view", "properties": {"x": value}},
    )

    reason = f"must be a string, a number, true, false or null, not {kind}"
    assert lead.json()["errors"] == [{"field": "custom.x", "reason": reason}]
    assert activity.json()["errors"] == [{"field": "properties.x", "reason": reason}]


async def test_a_marketing_import_cannot_claim_or_overwrite_sales_leads(intake: Intake) -> None:
    await intake.client.post(
        "/v1/leads",
        headers=intake.auth("sales"),
        json={"email": "raj@globex.io", "job_title": "CFO", "source": "sales"},
    )
    rows = (
        b'{"email": "raj@globex.io", "job_title": "Intern", "source": "sales"}\n'
        b'{"email": "raj@globex.io", "job_title": "Intern"}\n'
    )
    response = await intake.client.post(
        "/v1/leads/import",
        content=rows,
        headers={**intake.auth("marketing"), "content-type": "application/x-ndjson"},
    )

    summary = response.json()
    assert (summary["failed"], summary["unchanged"]) == (1, 1)
    assert [(e["line"], e["field"]) for e in summary["errors"]] == [(1, "source")]
    lead_id = (await intake.events("handoff.lead.captured", 1))[0]["key"]
    stored = await lead_view(intake, lead_id)
    assert stored["profile"]["job_title"] == "CFO"


async def test_a_salespersons_import_rows_are_sales_generated(intake: Intake) -> None:
    response = await intake.client.post(
        "/v1/leads/import",
        content=b"email,job_title\r\nkai@hooli.com,VP Sales\r\n",
        headers={**intake.auth("sales"), "content-type": "text/csv"},
    )

    assert response.json()["created"] == 1
    (captured,) = await intake.events("handoff.lead.captured", 1)
    assert captured["data"]["source"] == "sales"


async def test_a_lead_keeps_a_bounded_number_of_custom_attributes(intake: Intake) -> None:
    def custom(start: int) -> dict[str, object]:
        return {
            "email": "amy@vandelay.com",
            "custom": {f"k{i}": i for i in range(start, start + 30)},
        }

    auth = intake.auth()
    first = await intake.client.post("/v1/leads", json=custom(0), headers=auth)
    too_many = await intake.client.post("/v1/leads", json=custom(30), headers=auth)

    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "custom"
    stored = (await intake.client.get(f"/v1/leads/{first.json()['lead_id']}", headers=auth)).json()
    assert len(stored["profile"]["custom"]) == 30


async def test_a_national_number_is_read_in_the_country_the_lead_already_has(
    intake: Intake,
) -> None:
    auth = intake.auth()
    await intake.client.post(
        "/v1/leads", headers=auth, json={"email": "ute@initech.de", "country": "DE"}
    )
    known = await intake.client.post(
        "/v1/leads", headers=auth, json={"email": "ute@initech.de", "phone": "030 1234567"}
    )
    unknown = await intake.client.post(
        "/v1/leads", headers=auth, json={"email": "new@initech.de", "phone": "030 1234567"}
    )
    rows = b'{"email": "ute@initech.de", "phone": "089 7654321"}\n'
    imported = await intake.client.post(
        "/v1/leads/import", content=rows, headers={**auth, "content-type": "application/x-ndjson"}
    )

    assert known.status_code == 200 and known.json()["changed_fields"] == ["phone"]
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "phone"
    assert "+country code" in unknown.json()["errors"][0]["reason"]
    assert imported.json()["updated"] == 1
    stored = (await intake.client.get(f"/v1/leads/{known.json()['lead_id']}", headers=auth)).json()
    assert stored["profile"]["phone"] == "+49897654321"


async def test_colleagues_share_an_account_and_free_mail_gets_none(intake: Intake) -> None:
    auth = intake.auth()
    a = await intake.client.post("/v1/leads", json={"email": "a@initech.com"}, headers=auth)
    b = await intake.client.post("/v1/leads", json={"email": "b@initech.com"}, headers=auth)
    c = await intake.client.post("/v1/leads", json={"email": "c@gmail.com"}, headers=auth)
    # one company whichever of its hosts people mail from, or its site names
    d = await intake.client.post("/v1/leads", json={"email": "d@eu.initech.com"}, headers=auth)
    e = await intake.client.post(
        "/v1/leads",
        json={"email": "e@gmail.com", "company_domain": "https://shop.initech.com/"},
        headers=auth,
    )

    assert a.json()["account_id"] == b.json()["account_id"] is not None
    assert d.json()["account_id"] == e.json()["account_id"] == a.json()["account_id"]
    assert c.json()["account_id"] is None
    lead = (await intake.client.get(f"/v1/leads/{d.json()['lead_id']}", headers=auth)).json()
    assert lead["account"]["domain"] == "initech.com"


async def test_the_same_idempotency_key_replays_the_answer_and_another_body_conflicts(
    intake: Intake,
) -> None:
    headers = {**intake.auth(), "Idempotency-Key": "form-7781"}
    first = await intake.client.post("/v1/leads", json=ANA, headers=headers)
    replay = await intake.client.post("/v1/leads", json=ANA, headers=headers)
    other = await intake.client.post("/v1/leads", json={**ANA, "company": "X"}, headers=headers)

    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"

    reordered = json.dumps(dict(reversed(list(ANA.items()))), indent=2)  # same JSON
    retry = await intake.client.post(
        "/v1/leads", content=reordered, headers={**headers, "content-type": "application/json"}
    )
    assert retry.status_code == 201 and retry.json() == first.json()


async def test_an_idempotency_key_does_not_outlive_the_lead_it_answered(intake: Intake) -> None:
    headers = {**intake.auth(), "Idempotency-Key": "form-1"}
    first = await intake.client.post("/v1/leads", json=ANA, headers=headers)
    lead_id = first.json()["lead_id"]
    await intake.client.delete(f"/v1/leads/{lead_id}", headers=intake.auth("manager"))

    retry = await intake.client.post("/v1/leads", json=ANA, headers=headers)

    # captured anew: not the erased lead's answer replayed
    assert retry.status_code == 201 and "idempotent-replayed" not in retry.headers
    assert retry.json()["lead_id"] != lead_id
    stored = await lead_view(intake, retry.json()["lead_id"])
    assert stored["email"] == "ana.souza@acme.com" and not stored["erased"]


async def test_a_key_stored_under_the_bodys_bytes_still_replays(intake: Intake) -> None:
    body = json.dumps(ANA).encode()
    answer = StoredAnswer(201, {"lead_id": "00000000-0000-7000-8000-000000000001"})
    async with intake.runtime.db.transaction() as session:  # as stored before JSON compare
        await remember_answer(
            session, principal="form-bot", key="k-1", body_hash=raw_hash(body), answer=answer
        )

    retry = await intake.client.post(
        "/v1/leads",
        content=body,
        headers={
            **intake.auth(name="form-bot"),
            "Idempotency-Key": "k-1",
            "content-type": "application/json",
        },
    )
    assert (retry.status_code, retry.json()) == (201, answer.body)


async def test_an_invalid_lead_is_a_422_naming_each_field_and_nothing_is_written(
    intake: Intake,
) -> None:
    response = await intake.client.post(
        "/v1/leads",
        headers=intake.auth(),
        json={"email": "not-an-email", "country": "Atlantis", "company_size": -3, "phone": "call"},
    )

    problem = response.json()
    assert response.status_code == 422
    assert {e["field"] for e in problem["errors"]} == {"email", "country", "company_size", "phone"}
    assert await intake.events("handoff.lead.captured", 0) == []


async def test_a_viewer_may_not_capture_leads(intake: Intake) -> None:
    response = await intake.client.post("/v1/leads", json=ANA, headers=intake.auth("viewer"))
    assert response.status_code == 403


async def test_erasure_removes_personal_data_and_tells_every_service(intake: Intake) -> None:
    lead_id = (await intake.client.post("/v1/leads", json=ANA, headers=intake.auth())).json()[
        "lead_id"
    ]
    erased = await intake.client.delete(f"/v1/leads/{lead_id}", headers=intake.auth("manager"))
    stored = await lead_view(intake, lead_id)
    events = await intake.events("handoff.lead.captured", 2)

    assert erased.status_code == 204
    assert stored["email"] is None and stored["profile"] == {} and stored["erased"]
    assert stored["external_ids"] == {}
    assert events[-1]["type"] == "handoff.lead.erased.v1"
    again = await intake.client.post("/v1/leads", json=ANA, headers=intake.auth())
    assert again.status_code == 201 and again.json()["lead_id"] != lead_id


@pytest.mark.parametrize(("role", "status"), [("integration", 204), ("marketing", 403)])
async def test_an_integration_may_carry_out_an_erasure_and_marketing_may_not(
    intake: Intake, role: str, status: int
) -> None:
    lead_id = (await intake.client.post("/v1/leads", json=ANA, headers=intake.auth())).json()[
        "lead_id"
    ]
    response = await intake.client.delete(f"/v1/leads/{lead_id}", headers=intake.auth(role))

    assert response.status_code == status
    assert (await lead_view(intake, lead_id))["erased"] is (status == 204)


async def test_a_second_id_from_the_same_provider_keeps_both_ids_working(intake: Intake) -> None:
    auth = intake.auth()
    await intake.client.post(
        "/v1/leads",
        json={"email": "ana@acme.com", "external_ids": {"hubspot": "111"}},
        headers=auth,
    )
    merged = await intake.client.post(
        "/v1/leads",
        headers=auth,
        json={"email": "ana@acme.com", "external_ids": {"hubspot": "222"}},
    )
    by_old_id = await intake.client.post(
        "/v1/leads",
        headers=auth,
        json={"external_ids": {"hubspot": "111"}, "email": "ana@acme.com", "job_title": "CEO"},
    )

    assert by_old_id.status_code == 200
    assert by_old_id.json()["lead_id"] == merged.json()["lead_id"]
    stored = (await intake.client.get(f"/v1/leads/{merged.json()['lead_id']}", headers=auth)).json()
    assert stored["external_ids"] == {"hubspot": ["111", "222"]}


async def test_custom_attributes_are_kept_and_merged_but_never_put_on_the_bus(
    intake: Intake,
) -> None:
    auth = intake.auth()
    await intake.client.post(
        "/v1/leads",
        headers=auth,
        json={"email": "lu@acme.com", "custom": {"plan": "pro", "mobile": "+49151000"}},
    )
    again = await intake.client.post(
        "/v1/leads", headers=auth, json={"email": "lu@acme.com", "custom": {"seats": 12}}
    )

    stored = (await intake.client.get(f"/v1/leads/{again.json()['lead_id']}", headers=auth)).json()
    captured, updated = await intake.events("handoff.lead.captured", 2)
    assert stored["profile"]["custom"] == {"plan": "pro", "mobile": "+49151000", "seats": 12}
    assert "+49151000" not in str(captured["data"]) + str(updated["data"])
    assert updated["data"]["changed_pii"] == ["custom"]


async def test_concurrent_captures_of_one_new_person_make_one_lead_and_one_answer(
    intake: Intake,
) -> None:
    headers = {**intake.auth(), "Idempotency-Key": "double-click"}
    same_key = await asyncio.gather(
        *(intake.client.post("/v1/leads", json=ANA, headers=headers) for _ in range(4))
    )
    no_key = await asyncio.gather(
        *(
            intake.client.post("/v1/leads", json={"email": "kai@acme.com"}, headers=intake.auth())
            for _ in range(4)
        )
    )

    assert {r.status_code for r in same_key} == {201}
    assert len({r.json()["lead_id"] for r in same_key}) == 1
    assert sorted(r.status_code for r in no_key) == [200, 200, 200, 201]
    assert len({r.json()["lead_id"] for r in no_key}) == 1

"""Marketing platforms post webhooks: verified by signature, each event applied once."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from asyncpg.connection import LoggedQuery
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks import Webhook
from structlog.testing import capture_logs

from services.intake import leads as leads_module
from services.intake import webhook_intake
from services.intake.inbound_sources import SealClearSecrets
from services.intake.leads import KnownAccounts
from services.intake.models import accounts, inbound_sources, leads, webhook_deliveries
from services.intake.providers import InboundItem, SourceConfig
from services.intake.webhook_intake import Delivery, DeliveryReport, apply_deliveries
from shared.db import after_commit
from shared.observability.tracing import trace_id_of
from shared.sealing import Sealer
from tests.api.conftest import Intake

HUBSPOT_SECRET = "hubspot-app-secret-0123456789"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-secret-32bytes").decode()
SOURCE = SourceConfig(name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
# What every HubSpot event carries besides its own ids and type.
HUBSPOT_BASE = {
    "portalId": 1,
    "appId": 7,
    "occurredAt": 1,
    "attemptNumber": 0,
    "subscriptionId": 3,
}


async def add_source(intake: Intake, **source: object) -> None:
    response = await intake.client.post(
        "/v1/inbound-sources", json=source, headers=intake.auth("admin")
    )
    assert response.status_code == 201, response.text


def hubspot_headers(
    url: str, body: bytes, secret: str = HUBSPOT_SECRET, at_ms: int | None = None
) -> dict[str, str]:
    timestamp = str(at_ms or int(time.time() * 1000))
    message = b"POST" + url.encode() + body + timestamp.encode()
    signature = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest())
    return {
        "X-HubSpot-Signature-v3": signature.decode(),
        "X-HubSpot-Request-Timestamp": timestamp,
        "content-type": "application/json",
    }


def hubspot_batch() -> bytes:
    base = {
        "portalId": 62515,
        "appId": 7,
        "occurredAt": 1763800000000,
        "objectId": 9001,
        "attemptNumber": 0,
        "subscriptionId": 3,
    }
    return json.dumps(
        [
            {
                **base,
                "eventId": 1,
                "subscriptionType": "contact.propertyChange",
                "propertyName": "email",
                "propertyValue": "Kim@Wayne.com",
            },
            {
                **base,
                "eventId": 2,
                "subscriptionType": "contact.propertyChange",
                "propertyName": "jobtitle",
                "propertyValue": "VP Sales",
            },
            {**base, "eventId": 3, "subscriptionType": "deal.creation"},
        ]
    ).encode()


async def test_a_signed_hubspot_batch_keeps_the_good_events_and_reports_the_bad_one(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    url, body = "http://intake.test/v1/webhooks/hubspot", hubspot_batch()

    first = await intake.client.post(url, content=body, headers=hubspot_headers(url, body))
    retry = await intake.client.post(url, content=body, headers=hubspot_headers(url, body))

    assert first.status_code == 200
    assert first.json()["accepted"] == 2
    [failed] = first.json()["failed"]
    assert failed["delivery_id"] == "hubspot:62515:3"
    # what went wrong as one line, and field by field as problem details name it
    why = "unsupported subscriptionType deal.creation"
    assert (failed["reason"], failed["errors"]) == (why, [{"field": "event", "reason": why}])
    assert retry.json()["duplicates"] == 3 - 1 and retry.json()["accepted"] == 0
    (captured,) = await intake.events("handoff.lead.captured", 1)
    assert captured["data"]["external_ids"] == {"hubspot": "9001"}
    assert captured["data"]["profile"]["job_title"] == "VP Sales"


def privacy_deletion(event_id: int, object_id: int) -> dict[str, object]:
    return {
        "portalId": 62515,
        "objectId": object_id,
        "eventId": event_id,
        "subscriptionType": "contact.privacyDeletion",
        "occurredAt": 1763800000000,
    }


async def test_a_hubspot_privacy_deletion_erases_the_lead_everywhere(intake: Intake) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    email, title, _deal = json.loads(hubspot_batch())  # contact 9001: email, job title
    await post_hubspot(intake, [email, title])
    (captured,) = await intake.events("handoff.lead.captured", 1)

    unknown = privacy_deletion(11, 4242)
    deleted = await post_hubspot(intake, [privacy_deletion(10, 9001), unknown])
    again = await post_hubspot(intake, [privacy_deletion(10, 9001)])
    # Created and deleted in one delivery (on PostgreSQL the new rows are staged till commit):
    created = email | {"eventId": 30, "objectId": 9002, "propertyValue": "lu@wayne.com"}
    mixed = await post_hubspot(intake, [created, privacy_deletion(32, 9002)])

    assert (deleted["accepted"], deleted["failed"]) == (2, [])
    assert again["duplicates"] == 1
    assert (mixed["accepted"], mixed["failed"]) == (2, [])
    events = await intake.events("handoff.lead.captured", 4)
    erased = [e["key"] for e in events if "erased" in e["type"]]
    assert captured["key"] in erased and len(erased) == 2  # (partitions: in any order)
    for lead_id in erased:
        stored = (await intake.client.get(f"/v1/leads/{lead_id}", headers=intake.auth())).json()
        assert stored["email"] is None and stored["profile"] == {}


async def test_an_event_from_before_an_erasure_sent_again_does_not_bring_the_person_back(
    intake: Intake,
) -> None:
    """HubSpot retries an event it sent before the contact's privacy deletion (its answer
    was lost): a duplicate, and the erased person is not captured again."""
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    email = contact_event(101, 9005, "email", "ana@acme.com")
    await post_hubspot(intake, [email])
    await post_hubspot(intake, [privacy_deletion(102, 9005)])
    retried = await post_hubspot(intake, [email | {"attemptNumber": 1}])

    assert (retried["accepted"], retried["duplicates"]) == (0, 1)
    async with intake.runtime.db.engine.connect() as conn:
        emails = (await conn.execute(select(leads.c.email))).scalars().all()
        linked = dict(
            (
                await conn.execute(
                    select(webhook_deliveries.c.delivery_id, webhook_deliveries.c.lead_id)
                )
            ).all()
        )
    assert emails == [None]  # the one lead, erased
    # the event with the email recorded, no longer linked to the person; the erasure
    # names the (erased) lead it erased
    assert linked["hubspot:62515:101"] is None
    assert linked["hubspot:62515:102"] is not None


async def test_a_bad_or_stale_hubspot_signature_is_refused_and_nothing_is_written(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    url, body = "http://intake.test/v1/webhooks/hubspot", hubspot_batch()
    stale_ms = int(time.time() * 1000) - 6 * 60 * 1000

    forged = await intake.client.post(
        url, content=body, headers=hubspot_headers(url, body, secret="not-the-secret-at-all")
    )
    stale = await intake.client.post(
        url, content=body, headers=hubspot_headers(url, body, at_ms=stale_ms)
    )

    assert forged.status_code == stale.status_code == 401
    assert forged.headers["content-type"] == "application/problem+json"
    assert await intake.events("handoff.lead.captured", 0) == []


# (a sender's id of any length: one longer than the column is kept as its digest)
@pytest.mark.parametrize("webhook_id", ["msg_1", "msg_" + "7" * 400])
async def test_a_standard_webhook_is_verified_with_its_webhook_id_as_idempotency_key(
    intake: Intake, webhook_id: str
) -> None:
    await add_source(
        intake, name="forms", provider="standard", secret=STANDARD_SECRET, channel="web_form"
    )
    body = json.dumps(
        {
            "type": "lead.captured",
            "timestamp": "2026-11-22T10:00:00Z",
            "data": {"email": "eve@cyberdyne.com", "company": "Cyberdyne"},
        }
    )
    now = datetime.now(UTC)
    signature = Webhook(STANDARD_SECRET).sign(webhook_id, now, body)
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }

    first = await intake.client.post("/v1/webhooks/standard", content=body, headers=headers)
    again = await intake.client.post("/v1/webhooks/standard", content=body, headers=headers)

    assert first.json()["accepted"] == 1
    assert again.json()["duplicates"] == 1
    (event,) = await intake.events("handoff.lead.captured", 1)
    assert event["data"]["email_domain"] == "cyberdyne.com"


def standard_request(webhook_id: str, event: dict[str, Any]) -> tuple[str, dict[str, str]]:
    body = json.dumps(event)
    now = datetime.now(UTC)
    return body, {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(STANDARD_SECRET).sign(webhook_id, now, body),
        "content-type": "application/json",
    }


async def test_a_standard_webhook_whose_event_is_refused_is_a_422_naming_each_field(
    intake: Intake,
) -> None:
    """The request is its one event: refused, it is bad input (422), not a delivery made;
    nothing is recorded, so the same message corrected is taken."""
    await add_source(intake, name="forms", provider="standard", secret=STANDARD_SECRET)
    url = "/v1/webhooks/standard"
    bad = {"type": "lead.captured", "data": {"email": "not-an-email", "country": "Narnia"}}
    refused = await intake.client.post(
        url, content=(r := standard_request("msg_9", bad))[0], headers=r[1]
    )
    good = {"type": "lead.captured", "data": {"email": "eve@cyberdyne.com", "country": "DE"}}
    fixed = await intake.client.post(
        url, content=(r := standard_request("msg_9", good))[0], headers=r[1]
    )

    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["delivery_id"] == "standard:msg_9"
    assert [e["field"] for e in problem["errors"]] == ["email", "country"]
    assert all(e["reason"] for e in problem["errors"])
    assert fixed.status_code == 200 and fixed.json()["accepted"] == 1


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"type": "invoice.paid", "data": {}}, "unsupported event type invoice.paid"),
        (
            {
                "type": "activity.recorded",
                "data": {"activity_type": "page_view", "email": "no@x.com"},
            },
            "email: no lead with this email: capture the lead first",
        ),
    ],
    ids=["type-not-taken", "unknown-lead"],
)
async def test_a_standard_webhook_event_not_taken_for_another_reason_is_answered_200(
    intake: Intake, event: dict[str, Any], reason: str
) -> None:
    """Not bad input: a type handoff does not take, a lead it does not know. A 4xx would
    make the sender retry it, and in the end switch the endpoint off."""
    await add_source(intake, name="forms", provider="standard", secret=STANDARD_SECRET)
    body, headers = standard_request("msg_10", event)
    response = await intake.client.post("/v1/webhooks/standard", content=body, headers=headers)

    assert response.status_code == 200
    [failed] = response.json()["failed"]
    assert failed["reason"] == reason


async def test_a_marketo_webhook_needs_its_shared_token(intake: Intake) -> None:
    await add_source(intake, name="mkto", provider="marketo", secret="marketo-shared-token-1")
    body = json.dumps({"email": "ian@soylent.com", "leadId": "77", "title": "Buyer"})

    wrong = await intake.client.post(
        "/v1/webhooks/marketo", content=body, headers={"x-handoff-token": "guess"}
    )
    right = await intake.client.post(
        "/v1/webhooks/marketo", content=body, headers={"x-handoff-token": "marketo-shared-token-1"}
    )

    assert wrong.status_code == 401
    assert right.json()["accepted"] == 1


async def test_a_marketo_value_that_comes_back_is_applied_again(intake: Intake) -> None:
    await add_source(intake, name="mkto", provider="marketo", secret="marketo-shared-token-1")
    token = {"x-handoff-token": "marketo-shared-token-1"}
    answers = []
    for title in ("CFO", "CEO", "CFO", "CFO"):
        body = json.dumps({"email": "ann@globex.com", "leadId": 77, "title": title})
        answer = await intake.client.post("/v1/webhooks/marketo", content=body, headers=token)
        answers.append((answer.json()["accepted"], answer.json()["duplicates"]))

    assert answers == [(1, 0)] * 4
    # CFO -> CEO -> CFO: captured, then two updates; the last post, changing nothing,
    # announced nothing
    events = await intake.events("handoff.lead.captured", 3)
    assert [e["type"].split(".")[2] for e in events] == ["captured", "updated", "updated"]
    lead = (await intake.client.get(f"/v1/leads/{events[0]['key']}", headers=intake.auth())).json()
    assert lead["profile"]["job_title"] == "CFO"


async def test_the_objects_of_a_marketo_request_are_applied_in_their_order(
    intake: Intake,
) -> None:
    """A known lead changed twice in one request, first by its Marketo id, then by its
    email: the later object's value stays (items with an email do not jump the queue)."""
    await add_source(intake, name="mkto", provider="marketo", secret="marketo-shared-token-1")
    token = {"x-handoff-token": "marketo-shared-token-1"}
    known = json.dumps({"email": "m@initech.com", "leadId": 12, "title": "Analyst"})
    first = await intake.client.post("/v1/webhooks/marketo", content=known, headers=token)
    both = json.dumps(
        [{"leadId": 12, "title": "Manager"}, {"email": "m@initech.com", "title": "Director"}]
    )
    answer = await intake.client.post("/v1/webhooks/marketo", content=both, headers=token)

    assert (first.json()["accepted"], answer.json()["accepted"]) == (1, 2)
    events = await intake.events("handoff.lead.captured", 3)
    assert [e["data"].get("changes") for e in events[1:]] == [
        {"job_title": "Manager"},
        {"job_title": "Director"},
    ]
    lead = (await intake.client.get(f"/v1/leads/{events[0]['key']}", headers=intake.auth())).json()
    assert lead["profile"]["job_title"] == "Director"


async def test_a_field_map_naming_no_canonical_field_is_refused_when_configured(
    intake: Intake,
) -> None:
    source = {
        "name": "mkto",
        "provider": "marketo",
        "secret": "marketo-shared-token-1",
        "field_map": {"Email Address": "emial", "Tier": "custom.tier", "SFDC": "external_ids.sf"},
    }
    typo = await intake.client.post(
        "/v1/inbound-sources", json=source, headers=intake.auth("admin")
    )
    fixed = await intake.client.post(
        "/v1/inbound-sources",
        json={**source, "field_map": {**source["field_map"], "Email Address": "email"}},
        headers=intake.auth("admin"),
    )

    assert typo.status_code == 422
    assert typo.json()["errors"][0]["field"] == "field_map"
    assert "emial" in typo.json()["errors"][0]["reason"]
    assert fixed.status_code == 201


async def test_a_sources_secret_is_stored_sealed_and_a_foreign_seal_is_a_503(
    intake: Intake,
) -> None:
    await add_source(intake, name="mkto", provider="marketo", secret="marketo-shared-token-1")
    async with intake.runtime.db.engine.connect() as conn:
        stored = await conn.scalar(select(inbound_sources.c.secret))
    body = json.dumps({"email": "ian@soylent.com", "leadId": "77"})
    token = {"x-handoff-token": "marketo-shared-token-1"}
    accepted = await intake.client.post("/v1/webhooks/marketo", content=body, headers=token)

    assert "marketo-shared-token-1" not in stored
    assert accepted.json()["accepted"] == 1

    # The database moved to a service with another HANDOFF_SECRET_KEY:
    async with intake.runtime.db.transaction() as session:
        await session.execute(
            update(inbound_sources).values(
                secret=Sealer("another-key").seal("marketo-shared-token-1")
            )
        )
    intake.runtime.state.pop("sources", None)
    refused = await intake.client.post("/v1/webhooks/marketo", content=body, headers=token)
    assert refused.status_code == 503
    assert "HANDOFF_SECRET_KEY" in refused.json()["detail"]


async def test_a_secret_stored_in_the_clear_is_sealed_and_still_verifies(intake: Intake) -> None:
    await add_source(intake, name="mkto", provider="marketo", secret="marketo-shared-token-1")
    async with intake.runtime.db.transaction() as session:  # as an earlier version stored it
        await session.execute(update(inbound_sources).values(secret="marketo-shared-token-1"))

    await SealClearSecrets(intake.runtime).run()  # (what the service runs as it starts)
    async with intake.runtime.db.engine.connect() as conn:
        stored = await conn.scalar(select(inbound_sources.c.secret))
    intake.runtime.state.pop("sources", None)
    accepted = await intake.client.post(
        "/v1/webhooks/marketo",
        content=json.dumps({"email": "ian@soylent.com", "leadId": "77"}),
        headers={"x-handoff-token": "marketo-shared-token-1"},
    )

    assert stored.startswith("sealed:v1:") and "marketo-shared-token-1" not in stored
    assert accepted.json()["accepted"] == 1


async def test_an_unknown_provider_is_a_404_and_sources_never_show_their_secret(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    unknown = await intake.client.post("/v1/webhooks/pardot", content=b"{}")
    listed = await intake.client.get("/v1/inbound-sources", headers=intake.auth("admin"))

    assert unknown.status_code == 404
    assert HUBSPOT_SECRET not in listed.text
    assert listed.json()[0]["webhook_path"] == "/v1/webhooks/hubspot?source=hs"


async def test_deliveries_are_deduplicated_per_source_and_the_source_decides_lead_source(
    intake: Intake,
) -> None:
    for name in ("site-a", "site-b"):
        await add_source(intake, name=name, provider="standard", secret=STANDARD_SECRET)
    now = datetime.now(UTC)
    accepted = []
    for name, email in (("site-a", "a@one.com"), ("site-b", "b@two.com")):
        body = json.dumps(
            {
                "type": "lead.captured",
                "timestamp": now.isoformat(),
                "data": {"email": email, "source": "sales"},
            }
        )
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(STANDARD_SECRET).sign("msg_1", now, body),
        }
        response = await intake.client.post(
            f"/v1/webhooks/standard?source={name}", content=body, headers=headers
        )
        accepted.append(response.json()["accepted"])

    events = await intake.events("handoff.lead.captured", 2)
    assert accepted == [1, 1]  # the same webhook-id from two senders is two deliveries
    assert {e["data"]["source"] for e in events} == {"marketing"}


async def test_a_batch_naming_a_contacts_properties_before_its_email_loses_nothing(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    events = json.loads(hubspot_batch())[:2]
    body = json.dumps(list(reversed(events))).encode()  # job title first, email second
    url = "http://intake.test/v1/webhooks/hubspot"

    response = await intake.client.post(url, content=body, headers=hubspot_headers(url, body))

    assert response.json() == {"accepted": 2, "duplicates": 0, "failed": []}


def contact_event(event_id: int, object_id: int, prop: str, value: object) -> dict[str, object]:
    return {
        "portalId": 62515,
        "objectId": object_id,
        "eventId": event_id,
        "subscriptionType": "contact.propertyChange",
        "propertyName": prop,
        "propertyValue": value,
        "occurredAt": 1763800000000 + event_id,
    }


async def post_hubspot(intake: Intake, events: list[dict[str, object]]) -> dict[str, Any]:
    url = "http://intake.test/v1/webhooks/hubspot"
    body = json.dumps(events).encode()
    response = await intake.client.post(url, content=body, headers=hubspot_headers(url, body))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_new_contacts_events_in_one_delivery_make_one_lead_captured(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    creation = {"portalId": 62515, "objectId": 9100, "eventId": 40}
    new_contact = [
        {**creation, "subscriptionType": "contact.creation", "occurredAt": 1763800000000},
        contact_event(41, 9100, "firstname", "Ann"),
        contact_event(42, 9100, "email", "ann@acme.com"),
        contact_event(43, 9100, "firstname", "Anna"),  # a later value of the same property
        contact_event(44, 9200, "email", "bo@acme.com"),  # another contact
    ]

    first = await post_hubspot(intake, new_contact)
    later = await post_hubspot(intake, [contact_event(45, 9100, "lastname", "Berg")])

    assert (first["accepted"], first["failed"], later["accepted"]) == (5, [], 1)
    events = await intake.events("handoff.lead.captured", 3)
    ann = [e for e in events if e["data"].get("external_ids", {}).get("hubspot") == "9100"]
    ann += [e for e in events if e["key"] == ann[0]["key"] and e is not ann[0]]
    assert [e["type"] for e in ann] == [  # nothing came between: one event each
        "handoff.lead.captured.v1",
        "handoff.lead.updated.v1",
    ]
    assert 1 <= ann[0]["sequence"] < ann[1]["sequence"]  # (PostgreSQL: their outbox ids)
    assert ann[1]["data"]["changed_pii"] == ["last_name"]
    lead = (await intake.client.get(f"/v1/leads/{ann[0]['key']}", headers=intake.auth())).json()
    assert (lead["email"], lead["profile"]["first_name"]) == ("ann@acme.com", "Anna")


async def test_a_contact_creation_before_its_email_is_accepted_with_nothing_to_do(
    intake: Intake,
) -> None:
    """HubSpot's contact.creation carries no property: alone, for a contact not known yet,
    there is nothing to capture (its email's propertyChange makes the lead). Not a failure,
    and no lead without an email."""
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    creation = {"portalId": 62515, "objectId": 9300, "eventId": 50, "occurredAt": 1763800000000}
    created = await post_hubspot(intake, [{**creation, "subscriptionType": "contact.creation"}])
    named = await post_hubspot(intake, [contact_event(51, 9300, "firstname", "Cy")])
    email = await post_hubspot(intake, [contact_event(52, 9300, "email", "cy@acme.com")])

    assert (created["accepted"], created["failed"]) == (1, [])
    assert named["failed"][0]["reason"].startswith("email: unknown lead")  # (a field: failed)
    assert email["accepted"] == 1
    (captured,) = await intake.events("handoff.lead.captured", 1)
    assert captured["data"]["external_ids"] == {"hubspot": "9300"}


async def test_a_contacts_events_that_fail_together_go_again_one_by_one(intake: Intake) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    await post_hubspot(intake, [contact_event(1, 9300, "email", "cy@acme.com")])
    await post_hubspot(intake, [contact_event(2, 9400, "email", "di@acme.com")])

    # Contact 9300 takes the email of contact 9400 (refused) and a first name (kept).
    taken = await post_hubspot(
        intake,
        [contact_event(3, 9300, "email", "di@acme.com"), contact_event(4, 9300, "firstname", "Cy")],
    )
    # 51 custom properties of a new contact: too many for one capture, each fine alone.
    many = await post_hubspot(
        intake,
        [contact_event(10, 9500, "email", "ed@acme.com")]
        + [contact_event(11 + k, 9500, f"prop{k}", "x") for k in range(51)],
    )

    assert taken["accepted"] == 1
    assert [f["delivery_id"] for f in taken["failed"]] == ["hubspot:62515:3"]
    assert "another lead" in taken["failed"][0]["reason"]
    events = await intake.events("handoff.lead.captured", 4)
    cy = next(e["key"] for e in events if e["data"].get("external_ids") == {"hubspot": "9300"})
    stored = (await intake.client.get(f"/v1/leads/{cy}", headers=intake.auth())).json()
    assert (stored["email"], stored["profile"]["first_name"]) == ("cy@acme.com", "Cy")
    assert (many["accepted"], len(many["failed"])) == (1 + 50, 1)  # the lead's 51st key
    assert many["failed"][0]["delivery_id"] == "hubspot:62515:61"


async def test_one_delivery_comes_to_what_its_events_one_by_one_would(intake: Intake) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    await post_hubspot(intake, [contact_event(1, 9700, "email", "fy@acme.com")])

    cleared = await post_hubspot(  # a missing value leaves the one before
        intake,
        [contact_event(2, 9700, "firstname", "Fay"), contact_event(3, 9700, "firstname", None)],
    )
    fixed = await post_hubspot(  # an invalid value fails, whatever replaces it later
        intake,
        [
            contact_event(4, 9700, "lastname", "x" * 300),
            contact_event(5, 9700, "lastname", "Lund"),
        ],
    )

    assert (cleared["accepted"], cleared["failed"]) == (2, [])
    assert fixed["accepted"] == 1
    assert [f["delivery_id"] for f in fixed["failed"]] == ["hubspot:62515:4"]
    key = (await intake.events("handoff.lead.captured", 1))[0]["key"]  # (one lead's events)
    lead = (await intake.client.get(f"/v1/leads/{key}", headers=intake.auth())).json()
    assert (lead["profile"]["first_name"], lead["profile"]["last_name"]) == ("Fay", "Lund")


def timed(event_id: int, object_id: int, prop: str, value: object, at_ms: int) -> dict[str, object]:
    """A HubSpot property change that happened at `at_ms` (epoch milliseconds)."""
    return {**contact_event(event_id, object_id, prop, value), "occurredAt": at_ms}


async def profile_of(intake: Intake, email: str) -> dict[str, Any]:
    """The profile `GET /v1/leads/{id}` shows for the lead with this email."""
    async with intake.runtime.db.transaction() as session:
        lead_id = await session.scalar(select(leads.c.id).where(leads.c.email == email))
    response = await intake.client.get(f"/v1/leads/{lead_id}", headers=intake.auth())
    assert response.status_code == 200, response.text
    profile: dict[str, Any] = response.json()["profile"]
    return profile


async def test_a_late_event_older_than_a_fields_value_leaves_it_and_a_newer_one_sets_it(
    intake: Intake,
) -> None:
    """HubSpot retries a failed delivery for up to a day: an event can arrive after a newer
    one. A field keeps the value of the latest event that set it (`occurredAt`)."""
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    t = int(time.time() * 1000) - 60_000
    await post_hubspot(intake, [timed(1, 9800, "email", "kim@late.com", t)])
    await post_hubspot(intake, [timed(2, 9800, "jobtitle", "CEO", t + 5_000)])

    with capture_logs() as logs:
        late = await post_hubspot(intake, [timed(3, 9800, "jobtitle", "CFO", t + 1_000)])
    after_late = await profile_of(intake, "kim@late.com")
    newer = await post_hubspot(intake, [timed(4, 9800, "jobtitle", "CTO", t + 9_000)])

    assert late == newer == {"accepted": 1, "duplicates": 0, "failed": []}  # (as before)
    assert after_late["job_title"] == "CEO"
    assert (await profile_of(intake, "kim@late.com"))["job_title"] == "CTO"
    stale = [e for e in logs if e["event"].startswith("webhook event older")]
    assert [(e["fields"], e["delivery_ids"], e["log_level"]) for e in stale] == [
        (["job_title"], ["hubspot:62515:3"], "info")
    ]


async def test_a_contacts_events_in_one_delivery_apply_in_the_order_they_happened(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    t = int(time.time() * 1000) - 60_000
    reversed_events = [
        timed(10, 9801, "email", "lu@late.com", t),
        timed(12, 9801, "jobtitle", "CFO", t + 5_000),  # the newer value, sent first
        timed(11, 9801, "jobtitle", "CEO", t + 1_000),
        timed(13, 9801, "firstname", "Lu", t + 1_000),
    ]

    first = await post_hubspot(intake, reversed_events)
    made = await profile_of(intake, "lu@late.com")
    # Later deliveries: each field kept the time of the event whose value it took.
    await post_hubspot(
        intake,
        [
            timed(14, 9801, "jobtitle", "COO", t + 3_000),
            timed(15, 9801, "firstname", "Lou", t + 3_000),
        ],
    )

    assert (first["accepted"], first["failed"]) == (4, [])
    assert (made["job_title"], made["first_name"]) == ("CFO", "Lu")
    later = await profile_of(intake, "lu@late.com")
    assert (later["job_title"], later["first_name"]) == ("CFO", "Lou")


async def test_a_capture_through_the_api_happens_now_and_an_older_event_leaves_it(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    t = int(time.time() * 1000) - 60_000
    await post_hubspot(
        intake,
        [timed(20, 9802, "email", "mo@late.com", t), timed(21, 9802, "jobtitle", "CEO", t)],
    )

    api = await intake.client.post(
        "/v1/leads",
        json={"email": "mo@late.com", "job_title": "CTO", "source": "marketing"},
        headers=intake.auth(),
    )
    captured_at = int(time.time() * 1000) + 1  # (after the API's capture)
    older = await post_hubspot(intake, [timed(22, 9802, "jobtitle", "CFO", t + 30_000)])
    after_older = await profile_of(intake, "mo@late.com")
    newer = await post_hubspot(intake, [timed(23, 9802, "jobtitle", "COO", captured_at)])

    assert api.status_code == 200 and api.json()["changed_fields"] == ["job_title"]
    assert older["accepted"] == newer["accepted"] == 1
    assert after_older["job_title"] == "CTO"
    assert (await profile_of(intake, "mo@late.com"))["job_title"] == "COO"


async def test_a_failed_capture_goes_one_by_one_in_its_place_before_later_deliveries(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    await post_hubspot(intake, [contact_event(1, 9300, "email", "cy@acme.com")])
    await post_hubspot(intake, [contact_event(2, 9400, "email", "di@acme.com")])
    source = SourceConfig(name="hs", provider="hubspot", secret=HUBSPOT_SECRET)

    def item(event_id: int, **fields: object) -> InboundItem:
        data = {"external_ids": {"hubspot": "9300"}, "source": "marketing", **fields}
        return InboundItem(f"hubspot:62515:{event_id}", "lead", data)

    # Two requests applied in one batch: the first's email is another lead's (refused).
    first = Delivery([item(10, email="di@acme.com"), item(11, first_name="Old")], source)
    second = Delivery([item(12, first_name="New")], source)

    async def work(session: AsyncSession) -> list[DeliveryReport]:
        return await apply_deliveries(
            session, intake.runtime.outbox, [first, second], sales_owned=frozenset()
        )

    reports = await intake.runtime.db.run(work)

    assert [(r.accepted, len(r.failed)) for r in reports] == [(1, 1), (1, 0)]
    events = await intake.events("handoff.lead.captured", 4)
    cy = next(e["key"] for e in events if e["data"].get("external_ids") == {"hubspot": "9300"})
    lead = (await intake.client.get(f"/v1/leads/{cy}", headers=intake.auth())).json()
    assert lead["profile"]["first_name"] == "New"  # the later request's value


async def test_a_person_captured_again_after_an_erasure_in_one_batch_is_kept(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    await post_hubspot(intake, [contact_event(1, 77, "email", "gone@erase.com")])
    (gone,) = await intake.events("handoff.lead.captured", 1)
    source = SourceConfig(name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    erasure = Delivery(
        [InboundItem("hubspot:62515:5", "erasure", {"external_ids": {"hubspot": "77"}})], source
    )
    back = {"email": "gone@erase.com", "first_name": "Back", "source": "marketing"}
    again = Delivery(
        [InboundItem("hubspot:62515:6", "lead", {**back, "external_ids": {"hubspot": "78"}})],
        source,
    )

    # Two requests applied in one batch: the erasure, then the person coming back.
    async def work(session: AsyncSession) -> list[DeliveryReport]:
        return await apply_deliveries(
            session, intake.runtime.outbox, [erasure, again], sales_owned=frozenset()
        )

    reports = await intake.runtime.db.run(work)

    assert [(r.accepted, r.failed) for r in reports] == [(1, []), (1, [])]
    events = await intake.events("handoff.lead.captured", 3)  # (partitions: in any order)
    captured = [e["key"] for e in events if e["type"].endswith("captured.v1")]
    assert len(captured) == 2 and gone["key"] in captured
    (back_id,) = [key for key in captured if key != gone["key"]]
    erased = [e["key"] for e in events if e["type"].endswith("erased.v1")]
    assert erased == [gone["key"]]
    lead = (await intake.client.get(f"/v1/leads/{back_id}", headers=intake.auth())).json()
    assert (lead["email"], lead["profile"]["first_name"], lead["erased"]) == (
        "gone@erase.com",
        "Back",
        False,
    )


async def test_external_ids_of_the_wrong_shape_are_bad_input_naming_them(
    intake: Intake,
) -> None:
    """(Not a server error: each one-event request is a 422 naming external_ids.)"""
    await add_source(intake, name="site", provider="standard", secret=STANDARD_SECRET)
    now = datetime.now(UTC)
    answers = []
    for n, ids in enumerate((None, "abc", {"crm": ["a"]})):
        body = json.dumps(
            {
                "type": "lead.captured",
                "timestamp": now.isoformat(),
                "data": {"email": f"p{n}@acme.com", "external_ids": ids},
            }
        )
        headers = {
            "webhook-id": f"msg_{n}",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(STANDARD_SECRET).sign(f"msg_{n}", now, body),
        }
        response = await intake.client.post(
            "/v1/webhooks/standard?source=site", content=body, headers=headers
        )
        answers.append((response.status_code, response.json()))

    assert [status for status, _ in answers] == [422, 422, 422]
    assert all(a["errors"][0]["field"].startswith("external_ids") for _, a in answers)


async def test_concurrent_deliveries_are_applied_together_and_each_gets_its_own_report(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    url = "http://intake.test/v1/webhooks/hubspot"
    bodies = [
        json.dumps(
            [
                {
                    **HUBSPOT_BASE,
                    "eventId": 100 + n,
                    "objectId": 500 + n,
                    "subscriptionType": "contact.propertyChange",
                    "propertyName": "email",
                    "propertyValue": f"person{n}@batch.com",
                },
                *(
                    [
                        {
                            **HUBSPOT_BASE,
                            "eventId": 900,
                            "objectId": 1,
                            "subscriptionType": "deal.creation",
                        }
                    ]
                    if n == 3
                    else []
                ),
            ]
        ).encode()
        for n in range(8)
    ]

    responses = await asyncio.gather(
        *(intake.client.post(url, content=b, headers=hubspot_headers(url, b)) for b in bodies)
    )

    reports = [r.json() for r in responses]
    assert [r["accepted"] for r in reports] == [1] * 8
    assert [len(r["failed"]) for r in reports] == [0, 0, 0, 1, 0, 0, 0, 0]
    assert len(await intake.events("handoff.lead.captured", 8)) == 8


async def test_each_delivery_of_a_batch_keeps_the_trace_it_came_in(intake: Intake) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    url = "http://intake.test/v1/webhooks/hubspot"
    traces = {f"trace{n}.com": f"{n + 1:032x}" for n in range(8)}  # email domain -> trace id
    requests = []
    for n, (domain, trace) in enumerate(traces.items()):
        event = {
            **HUBSPOT_BASE,
            "eventId": 300 + n,
            "objectId": 700 + n,
            "subscriptionType": "contact.propertyChange",
            "propertyName": "email",
            "propertyValue": f"person{n}@{domain}",
        }
        body = json.dumps([event]).encode()
        headers = {**hubspot_headers(url, body), "traceparent": f"00-{trace}-{n + 1:016x}-01"}
        requests.append(intake.client.post(url, content=body, headers=headers))

    responses = await asyncio.gather(*requests)

    assert [r.json()["accepted"] for r in responses] == [1] * 8
    events = await intake.events("handoff.lead.captured", 8)
    assert {e["data"]["email_domain"]: trace_id_of(e["traceparent"]) for e in events} == traces


# (behind two proxies each header holds both hops, the sender's first)
@pytest.mark.parametrize("hosts", ["crm.example.com", "crm.example.com, intake.internal"])
async def test_the_signed_url_is_the_public_one_a_proxy_forwards(
    intake: Intake, hosts: str
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    body = hubspot_batch()
    internal = "http://intake.test/v1/webhooks/hubspot?source=hs"
    public = "https://crm.example.com/v1/webhooks/hubspot?source=hs"
    proxied = {"X-Forwarded-Proto": "https, http", "X-Forwarded-Host": hosts}

    signed_public = await intake.client.post(
        internal, content=body, headers={**hubspot_headers(public, body), **proxied}
    )
    signed_internal = await intake.client.post(
        internal, content=body, headers={**hubspot_headers(internal, body), **proxied}
    )
    direct = await intake.client.post(
        internal, content=body, headers=hubspot_headers(internal, body)
    )

    assert signed_public.status_code == 200, signed_public.text
    assert signed_public.json()["accepted"] == 2
    assert signed_internal.status_code == 401
    assert direct.status_code == 200 and direct.json()["duplicates"] == 2  # the bad one is not kept


async def test_an_overlong_source_name_is_a_422_naming_the_parameter(intake: Intake) -> None:
    url, body = "http://intake.test/v1/webhooks/hubspot?source=" + "x" * 101, hubspot_batch()
    response = await intake.client.post(url, content=body, headers=hubspot_headers(url, body))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    (error,) = response.json()["errors"]
    assert error["field"].endswith("source") and "100 characters" in error["reason"]


async def test_the_webhook_route_documents_its_provider_and_source(intake: Intake) -> None:
    spec = (await intake.client.get("/openapi.json")).json()
    operation = spec["paths"]["/v1/webhooks/{provider}"]["post"]
    params = {(p["name"], p["in"]): p for p in operation["parameters"]}
    assert params[("provider", "path")]["required"] is True
    assert params[("source", "query")]["schema"]["maxLength"] == 100


async def test_webhook_answers_are_counted_by_route_and_status_and_carry_the_trace(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    url, body = "http://intake.test/v1/webhooks/hubspot", hubspot_batch()
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    series = 'route="/v1/webhooks/{provider}",service="intake",status="%s"}'
    before = _counts(await intake.client.get("/metrics"), series)

    ok = await intake.client.post(
        url, content=body, headers={**hubspot_headers(url, body), "traceparent": caller}
    )
    again = await intake.client.post(url, content=body, headers=hubspot_headers(url, body))
    forged = await intake.client.post(url, content=body, headers=hubspot_headers(url, b"[]"))

    after = _counts(await intake.client.get("/metrics"), series)
    assert (ok.status_code, again.status_code, forged.status_code) == (200, 200, 401)
    assert after["200"] - before["200"] == 2 and after["401"] - before["401"] == 1
    assert ok.headers["traceparent"].split("-")[1] == caller.split("-")[1]
    assert again.headers["traceparent"] != ok.headers["traceparent"]


def _counts(metrics: httpx.Response, series: str) -> dict[str, float]:
    """handoff_http_requests_total of the webhook route, by status (0 when not yet seen)."""
    out = {"200": 0.0, "401": 0.0}
    for line in metrics.text.splitlines():
        for status in out:
            if line.startswith("handoff_http_requests_total{") and line.split(" ")[0].endswith(
                series % status
            ):
                out[status] = float(line.rsplit(" ", 1)[1])
    return out


@pytest.mark.integration
@pytest.mark.parametrize("intake", ["postgres"], indirect=True)
@pytest.mark.parametrize(
    "way", ["looked-up", "taken-as-new", "taken-as-new-accounts-known"], ids=str
)
async def test_a_webhook_batch_waits_on_five_four_or_one_round_trips_on_postgres(
    intake: Intake, way: str
) -> None:
    """Each statement a batch waits on is a round trip (about a twentieth of the batch).
    Looked up: BEGIN; the deliveries seen; the leads, with the accounts of their domains;
    one statement for the leads, the deliveries, the new accounts and the events; COMMIT.
    Taken to be new (deliveries and leads): BEGIN; the accounts; the write; COMMIT. And
    with their accounts known: the write alone, which needs no transaction."""
    known = KnownAccounts()

    def deliveries(batch: int) -> list[Delivery]:
        return [
            Delivery([lead_item(f"{batch}:{n}", email=f"p{batch}{n}@rt{n}.com")], SOURCE)
            for n in range(3)
        ]

    async def apply(batch: int, sent: list[str] | None = None) -> list[DeliveryReport]:
        def log(query: LoggedQuery) -> None:
            assert sent is not None
            sent.append(query.query)

        async def work(session: AsyncSession) -> list[DeliveryReport]:
            if sent is not None:
                # every statement on the unit of work's connection, as asyncpg sends it,
                # until it has committed (the relay may take the connection next)
                raw = await (await session.connection()).get_raw_connection()
                connection = raw.driver_connection
                connection.add_query_logger(log)
                after_commit(session, lambda: connection.remove_query_logger(log))
            return await apply_deliveries(
                session,
                intake.runtime.outbox,
                deliveries(batch),
                sales_owned=frozenset(),
                unseen=way != "looked-up",
                accounts_known=known if way.endswith("known") else None,
            )

        return await intake.runtime.db.run(work)

    await apply(1)  # the accounts made (and, if kept, known)
    sent: list[str] = []
    reports = await apply(2, sent)
    await asyncio.sleep(0.01)  # (the logger is called soon after each statement)

    assert [r.accepted for r in reports] == [1, 1, 1]
    # (less asyncpg's own look-ups of types, once per connection)
    ours = [query for query in sent if "typeinfo_tree" not in query and "'jit'" not in query]
    if way == "looked-up":
        begin, seen, found, written, commit = ours
        assert "FROM webhook_deliveries" in seen
        assert "FOR UPDATE" in found and "FROM accounts" in found
    elif way == "taken-as-new":
        begin, found, written, commit = ours
        assert "FROM leads" not in found and "FROM accounts" in found
    else:
        (written,) = ours
        begin = commit = "(none)"
    if way == "taken-as-new-accounts-known":
        assert "BEGIN" not in written and "COMMIT" not in written
        assert len(known) == 3
    else:
        assert begin.startswith("BEGIN") and commit.startswith("COMMIT")
    for table in ("leads", "webhook_deliveries", "outbox"):
        assert f"INSERT INTO {table} " in written
    captured = await intake.events("handoff.lead.captured", 6)
    by_domain: dict[str, set[str]] = {}
    for event in captured:
        by_domain.setdefault(event["data"]["email_domain"], set()).add(event["data"]["account_id"])
    assert all(len(ids) == 1 for ids in by_domain.values()) and len(by_domain) == 3


def counted_calls(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> Callable[[], int]:
    """Count the calls of the coroutine function `module.name`; returns the count so far."""
    real = getattr(module, name)
    calls = 0

    async def counted(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args)

    monkeypatch.setattr(module, name, counted)
    return lambda: calls


def lead_item(delivery: str, **data: Any) -> InboundItem:
    return InboundItem(f"hubspot:{delivery}", "lead", data)


async def apply_as_the_batcher(
    intake: Intake,
    *items: InboundItem,
    unseen: bool = True,
    accounts_known: KnownAccounts | None = None,
) -> tuple[list[DeliveryReport], int]:
    """Each item a delivery of its own, in one unit of work run as `DeliveryBatcher` runs
    it: taken to be new (`unseen`) at first, looked up when it runs again. Returns the
    reports and how many times it ran."""
    runs = 0

    async def work(session: AsyncSession) -> list[DeliveryReport]:
        nonlocal runs
        runs += 1
        return await apply_deliveries(
            session,
            intake.runtime.outbox,
            [Delivery([item], SOURCE) for item in items],
            sales_owned=frozenset(),
            unseen=unseen and runs == 1,
            accounts_known=accounts_known,
        )

    return await intake.runtime.db.run(work, conflict_retries=2), runs


async def test_a_batch_takes_its_deliveries_as_new_on_postgres_and_looks_again_if_one_was_seen(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the deliveries are first taken to be new; one seen before fails the
    write, and the batch runs again looking them up: the same answers either way."""
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    looked_up = counted_calls(monkeypatch, webhook_intake, "_seen")
    url, body = "http://intake.test/v1/webhooks/hubspot", hubspot_batch()
    first = await intake.client.post(url, content=body, headers=hubspot_headers(url, body))
    first_looked_up = looked_up()
    again = await intake.client.post(url, content=body, headers=hubspot_headers(url, body))

    assert first.status_code == again.status_code == 200
    assert first.json()["accepted"] > 0 and again.json()["accepted"] == 0
    assert again.json()["duplicates"] == first.json()["accepted"]
    postgres = intake.runtime.db.is_postgres
    assert (first_looked_up, looked_up()) == ((0, 1) if postgres else (1, 2))


@pytest.mark.integration
@pytest.mark.parametrize("intake", ["postgres"], indirect=True)
async def test_a_delivery_seen_before_is_a_duplicate_beside_an_erasure_of_its_lead(
    intake: Intake,
) -> None:
    """Erasing a lead unlinks or deletes its deliveries, so a batch with an erasure looks its
    deliveries up even when it would take them to be new."""
    source = SourceConfig(name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    lead = InboundItem(
        "hubspot:1:1", "lead", {"email": "gone@erase.com", "external_ids": {"hubspot": "77"}}
    )
    erasure = InboundItem("hubspot:1:2", "erasure", {"external_ids": {"hubspot": "77"}})

    async def apply(items: list[InboundItem]) -> list[DeliveryReport]:
        async def work(session: AsyncSession) -> list[DeliveryReport]:
            return await apply_deliveries(
                session,
                intake.runtime.outbox,
                [Delivery(items, source)],
                sales_owned=frozenset(),
                unseen=True,
            )

        return await intake.runtime.db.run(work)

    (first,) = await apply([lead])
    (again,) = await apply([lead, erasure])  # the lead's delivery sent again

    assert (first.accepted, again.duplicates, again.accepted) == (1, 1, 1)


def contact_change(event_id: int, object_id: int, name: str, value: str) -> dict[str, Any]:
    return {
        "portalId": 62515,
        "appId": 7,
        "occurredAt": 1763800000000,
        "eventId": event_id,
        "objectId": object_id,
        "attemptNumber": 0,
        "subscriptionId": 3,
        "subscriptionType": "contact.propertyChange",
        "propertyName": name,
        "propertyValue": value,
    }


async def test_contacts_are_taken_as_new_on_postgres_and_looked_up_when_they_are_not(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a batch first takes its contacts to be new. A contact named without
    an email is looked up before anything is written; a known email fails the write and
    the batch runs again looking its leads up, as do the batches right after it. The
    leads and events come out as when every batch looks its leads up (SQLite)."""
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    looked_up = counted_calls(monkeypatch, leads_module, "_load_known")
    url = "http://intake.test/v1/webhooks/hubspot"
    after: list[int] = []

    async def post(*events: dict[str, Any]) -> None:
        body = json.dumps(events).encode()
        response = await intake.client.post(url, content=body, headers=hubspot_headers(url, body))
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(events), response.text
        after.append(looked_up())

    await post(contact_change(1, 9001, "email", "kim@wayne.com"))  # new
    await post(contact_change(2, 9001, "jobtitle", "VP Sales"))  # no email: looked up
    with capture_logs() as logs:
        await post(  # a known email: the write fails, the batch runs again
            contact_change(3, 9001, "email", "kim@wayne.com"),
            contact_change(4, 9001, "firstname", "Kim"),
        )
    ran_again = [e for e in logs if e["event"].startswith("webhook batch held")]
    if intake.runtime.db.is_postgres:  # (says so, and how many batches look up next)
        assert [e["looking_up_next"] for e in ran_again] == [8]
    else:
        assert ran_again == []
    await post(contact_change(5, 9002, "email", "lee@wayne.com"))  # right after: looked up

    assert after == ([0, 1, 2, 3] if intake.runtime.db.is_postgres else [1, 2, 3, 4])
    async with intake.runtime.db.transaction() as session:
        rows = (await session.execute(select(leads.c.email, leads.c.profile))).all()
    profiles = {email: profile for email, profile in rows}
    assert profiles.keys() == {"kim@wayne.com", "lee@wayne.com"}
    assert profiles["kim@wayne.com"]["job_title"] == "VP Sales"
    assert profiles["kim@wayne.com"]["first_name"] == "Kim"
    events = await intake.events("handoff.lead.captured", 4)  # (lead.updated's topic too)
    by_lead: dict[str, list[tuple[str, list[str]]]] = {}  # (in order per lead, its key)
    for e in events:
        changed = [*e["data"].get("changes", ()), *e["data"].get("changed_pii", ())]
        by_lead.setdefault(e["key"], []).append((e["type"].split(".")[2], changed))
    assert sorted(by_lead.values(), key=len) == [
        [("captured", [])],
        [
            ("captured", []),
            ("updated", ["job_title"]),
            ("updated", ["first_name"]),  # (a personal field: named, its value not on the bus)
        ],
    ]


@pytest.mark.integration
@pytest.mark.parametrize("intake", ["postgres"], indirect=True)
async def test_accounts_are_known_only_once_their_batch_has_committed(intake: Intake) -> None:
    """A batch taken to be new that makes an account and then runs again (a known
    contact in it) makes the account anew; only the committed one is remembered, and the
    next batch's leads of that domain take it."""
    known = KnownAccounts()

    async def apply(*emails: tuple[str, str], unseen: bool) -> int:
        items = [lead_item(delivery, email=email) for delivery, email in emails]
        reports, runs = await apply_as_the_batcher(
            intake, *items, unseen=unseen, accounts_known=known
        )
        assert [r.accepted for r in reports] == [1] * len(items)
        return runs

    assert await apply(("1", "kim@wayne.com"), unseen=False) == 1
    # a new domain, and a known contact: the first run's account is rolled back
    assert await apply(("2", "ann@fresh.io"), ("3", "kim@wayne.com"), unseen=True) == 2
    assert await apply(("4", "bob@fresh.io"), unseen=True) == 1  # fresh.io known

    async with intake.runtime.db.transaction() as session:
        account_ids = {
            domain: account_id
            for domain, account_id in await session.execute(
                select(accounts.c.domain, accounts.c.id)
            )
        }
        lead_accounts = {
            email: account_id
            for email, account_id in await session.execute(
                select(leads.c.email, leads.c.account_id)
            )
        }
    assert account_ids.keys() == {"wayne.com", "fresh.io"}
    assert lead_accounts["ann@fresh.io"] == lead_accounts["bob@fresh.io"] == account_ids["fresh.io"]
    assert lead_accounts["kim@wayne.com"] == account_ids["wayne.com"]


async def test_an_email_changed_within_a_batch_finds_the_lead_of_the_first_email(
    intake: Intake,
) -> None:
    """A batch taken to be new that makes a lead and then changes its email would write
    only the second email, so nothing would say the first was known: such a batch looks
    its leads up, and the lead of the first email takes the change."""
    hubspot = {"hubspot": "9001"}
    await apply_as_the_batcher(intake, lead_item("1", email="ann@acme.com"))  # (a form's)
    reports, _ = await apply_as_the_batcher(
        intake,
        lead_item("2", email="ann@acme.com", external_ids=hubspot),
        lead_item("3", email="ann@newco.com", external_ids=hubspot),
    )

    assert [r.accepted for r in reports] == [1, 1]
    async with intake.runtime.db.transaction() as session:
        emails = (await session.execute(select(leads.c.email))).scalars().all()
    assert emails == ["ann@newco.com"]  # one lead: the first one, its email changed


@pytest.mark.integration
@pytest.mark.parametrize("intake", ["postgres"], indirect=True)
async def test_a_batch_that_looked_up_after_all_leaves_the_backoff_as_it_was(
    intake: Intake,
) -> None:
    """After a batch that ran again, the next ones look up; one that took no contact to be
    new after all (a property change without the email; no contact in it) neither resets
    the backoff nor adds to it, so the next failure waits twice as long as the first."""
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    url = "http://intake.test/v1/webhooks/hubspot"
    event_ids = iter(range(1, 100))

    async def post(*changes: tuple[int, str, str]) -> None:
        events = [contact_change(next(event_ids), *c) for c in changes]
        if not changes:  # an event that is no contact's (reported as failed)
            deal = contact_change(next(event_ids), 1, "", "")
            events = [{**deal, "subscriptionType": "deal.creation"}]
        body = json.dumps(events).encode()
        response = await intake.client.post(url, content=body, headers=hubspot_headers(url, body))
        assert response.json()["accepted"] == len(changes), response.text

    with capture_logs() as logs:
        await post((9001, "email", "kim@wayne.com"))  # new, held
        await post((9001, "email", "kim@wayne.com"), (9001, "firstname", "Kim"))  # ran again
        for n in range(8):  # looked up, as the backoff says
            await post((9100 + n, "email", f"p{n}@wayne.com"))
        await post((9001, "jobtitle", "CTO"))  # taken to be new, looked up after all
        await post()  # no contact in it at all
        await post((9001, "email", "kim@wayne.com"), (9001, "lastname", "Ray"))  # ran again

    ran_again = [e for e in logs if e["event"].startswith("webhook batch held")]
    assert [e["looking_up_next"] for e in ran_again] == [8, 16]


@pytest.mark.integration
@pytest.mark.parametrize("intake", ["postgres"], indirect=True)
async def test_two_writers_taking_the_same_new_contact_to_be_new_make_one_lead(
    intake: Intake,
) -> None:
    """Two replicas may both take one new contact (and its new company) to be new: the
    second write waits on the first's keys, fails on them once it commits, and runs again
    looking up, so there is one lead and one account, and both deliveries are applied."""

    async def apply(delivery: str, name: str) -> tuple[DeliveryReport, int]:
        item = lead_item(delivery, email="kim@brandnew.io", first_name=name)
        # (each replica its own accounts known)
        (report,), runs = await apply_as_the_batcher(intake, item, accounts_known=KnownAccounts())
        return report, runs

    outcomes = await asyncio.gather(apply("1", "Kim"), apply("2", "Kimberly"))
    reports, runs = zip(*outcomes, strict=True)

    assert [r.accepted for r in reports] == [1, 1]
    assert sorted(runs) == [1, 2]  # the second ran again, looking up
    async with intake.runtime.db.transaction() as session:
        lead_rows = (await session.execute(select(leads.c.email, leads.c.account_id))).all()
        account_ids = (await session.execute(select(accounts.c.id))).scalars().all()
    assert [email for email, _ in lead_rows] == ["kim@brandnew.io"]
    assert [account for _, account in lead_rows] == account_ids  # one account, the lead's

"""Webhook adapters verify the raw request first, then map provider events to canonical items.

HubSpot signatures are computed here from the documented algorithm, independently of the
adapter; Standard Webhooks signatures come from the reference ``standardwebhooks`` package.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook

from services.intake.canonical import LeadIn
from services.intake.providers import (
    ADAPTERS,
    InboundItem,
    InboundRequest,
    PayloadError,
    SignatureError,
    SourceConfig,
)

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HUBSPOT = SourceConfig(name="hubspot-main", provider="hubspot", secret="hs-client-secret")
HUBSPOT_URL = "https://crm.example.com/v1/webhooks/hubspot?source=main"
STANDARD = SourceConfig(
    name="forms",
    provider="standard",
    secret="whsec_" + base64.b64encode(b"a-32-byte-standard-webhook-key!!").decode(),
    channel="web_form",
)
MARKETO = SourceConfig(
    name="marketo-eu", provider="marketo", secret="t0k3n", token_header="X-Marketo-Token"
)


def millis(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def hubspot_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """HubSpot's documented v3: base64(HMAC-SHA256(secret, method + uri + body + timestamp))."""
    source = f"{method}{uri}{body.decode()}{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def hubspot_request(
    body: bytes, signature: str, timestamp: str, url: str = HUBSPOT_URL
) -> InboundRequest:
    headers = {"x-hubspot-signature-v3": signature, "x-hubspot-request-timestamp": timestamp}
    return InboundRequest(method="POST", url=url, headers=headers, body=body)


def signed_hubspot_request(body: bytes, at: datetime = NOW) -> InboundRequest:
    timestamp = millis(at)
    signature = hubspot_v3(HUBSPOT.secret, "POST", HUBSPOT_URL, body, timestamp)
    return hubspot_request(body, signature, timestamp)


def parse_hubspot(events: list[Any], source: SourceConfig = HUBSPOT) -> list[InboundItem]:
    """What the HubSpot adapter makes of a signed request carrying `events`."""
    return ADAPTERS["hubspot"].parse(signed_hubspot_request(json.dumps(events).encode()), source)


def hubspot_event(event_id: int, subscription_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "eventId": event_id,
        "subscriptionId": 1,
        "portalId": 62515,
        "appId": 54,
        "occurredAt": 1700000000000,
        "subscriptionType": subscription_type,
        "attemptNumber": 0,
        "objectId": 123,
        **extra,
    }


def test_hubspot_request_signed_with_the_client_secret_is_accepted() -> None:
    request = signed_hubspot_request(b'[{"eventId": 1}]')

    ADAPTERS["hubspot"].verify(request, HUBSPOT, now=NOW)


def test_hubspot_signs_the_url_with_its_reserved_characters_decoded() -> None:
    url = "https://crm.example.com/v1/webhooks/hubspot?source=hs%3Amain&next=%2Fok%20now"
    as_signed = "https://crm.example.com/v1/webhooks/hubspot?source=hs:main&next=/ok%20now"
    body, timestamp = b"[]", millis(NOW)
    signature = hubspot_v3(HUBSPOT.secret, "POST", as_signed, body, timestamp)

    ADAPTERS["hubspot"].verify(hubspot_request(body, signature, timestamp, url), HUBSPOT, now=NOW)


@pytest.mark.parametrize(
    ("signed_at", "reason"),
    [
        (NOW - timedelta(minutes=5, seconds=1), "more than 5 minutes old"),
        (NOW + timedelta(minutes=5, seconds=1), "more than 5 minutes in the future"),
    ],
)
def test_hubspot_request_signed_more_than_five_minutes_from_now_is_rejected(
    signed_at: datetime, reason: str
) -> None:
    request = signed_hubspot_request(b"[]", at=signed_at)

    with pytest.raises(SignatureError, match=reason):
        ADAPTERS["hubspot"].verify(request, HUBSPOT, now=NOW)


def test_hubspot_tampered_body_is_rejected_without_revealing_the_expected_signature() -> None:
    signed = signed_hubspot_request(b'[{"eventId": 1}]')
    tampered = InboundRequest("POST", signed.url, signed.headers, b'[{"eventId": 2}]')
    expected = hubspot_v3(HUBSPOT.secret, "POST", HUBSPOT_URL, tampered.body, millis(NOW))

    with pytest.raises(SignatureError, match="does not match") as raised:
        ADAPTERS["hubspot"].verify(tampered, HUBSPOT, now=NOW)

    assert expected not in str(raised.value)


@pytest.mark.parametrize("missing", ["x-hubspot-signature-v3", "x-hubspot-request-timestamp"])
def test_hubspot_request_missing_a_signature_header_is_rejected_naming_it(missing: str) -> None:
    signed = signed_hubspot_request(b"[]")
    headers = {name: value for name, value in signed.headers.items() if name != missing}
    request = InboundRequest("POST", signed.url, headers, signed.body)

    with pytest.raises(SignatureError, match=f"missing {missing}"):
        ADAPTERS["hubspot"].verify(request, HUBSPOT, now=NOW)


@pytest.mark.parametrize("timestamp", ["1.7e12", "\u00b2", "9" * 40])
def test_hubspot_timestamp_that_is_not_epoch_milliseconds_is_rejected(timestamp: str) -> None:
    request = hubspot_request(b"[]", "c2lnbmF0dXJl", timestamp)

    with pytest.raises(SignatureError, match="not an epoch timestamp"):
        ADAPTERS["hubspot"].verify(request, HUBSPOT, now=NOW)


def test_hubspot_batch_keeps_contact_events_and_flags_unsupported_ones() -> None:
    events = [
        hubspot_event(100, "contact.creation"),
        hubspot_event(101, "contact.propertyChange", propertyName="email", propertyValue="a@x.io"),
        hubspot_event(102, "deal.creation"),
    ]
    source = SourceConfig(name="hs", provider="hubspot", secret="s", channel="web_form")

    items = parse_hubspot(events, source)

    created, changed, deal = items
    assert created.delivery_id == "hubspot:62515:100"
    assert created.data == {
        "external_ids": {"hubspot": "123"},
        "source": "marketing",
        "channel": "web_form",
    }
    assert (changed.data["email"], changed.error) == ("a@x.io", None)
    assert (deal.delivery_id, deal.data) == ("hubspot:62515:102", {})
    assert deal.error == "unsupported subscriptionType deal.creation"


@pytest.mark.parametrize(
    ("occurred_at", "expected"),
    [
        (1700000000123, datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
        (1700000000123.0, datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)),
        ("1700000000123", None),  # not a number
        (True, None),
        (None, None),
        (10**30, None),  # out of range
    ],
    ids=["millis", "float", "text", "bool", "null", "huge"],
)
def test_hubspot_occurred_at_is_when_the_event_happened(
    occurred_at: object, expected: datetime | None
) -> None:
    event = hubspot_event(1, "contact.propertyChange", propertyName="jobtitle", propertyValue="CEO")
    missing = {k: v for k, v in event.items() if k != "occurredAt"}

    (item, without) = parse_hubspot([{**event, "occurredAt": occurred_at}, missing])

    assert (item.occurred_at, item.error) == (expected, None)
    assert without.occurred_at is None and without.error is None


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-03-02T11:59:00.5Z", datetime(2026, 3, 2, 11, 59, 0, 500000, tzinfo=UTC)),
        ("2026-03-02T12:59:00+01:00", datetime(2026, 3, 2, 11, 59, tzinfo=UTC)),
        ("2026-03-02T11:59:00", datetime(2026, 3, 2, 11, 59, tzinfo=UTC)),  # (naive: UTC)
        ("yesterday", None),
        (1772452740, None),
    ],
)
def test_standard_webhook_timestamp_is_when_the_event_happened(
    timestamp: object, expected: datetime | None
) -> None:
    event = {"type": "lead.captured", "timestamp": timestamp, "data": {"email": "a@x.io"}}

    (item,) = ADAPTERS["standard"].parse(standard_request(event), STANDARD)

    assert (item.occurred_at, item.error) == (expected, None)


def test_hubspot_unmapped_property_goes_to_custom_unless_the_field_map_names_it() -> None:
    events = [
        hubspot_event(
            1, "contact.propertyChange", propertyName="lifecyclestage", propertyValue="x"
        ),
        hubspot_event(2, "contact.propertyChange", propertyName="hs_source", propertyValue="ads"),
    ]
    source = SourceConfig("hs", "hubspot", "s", field_map={"hs_source": "utm_source"})

    lifecycle, utm = parse_hubspot(events, source)

    assert lifecycle.data["custom"] == {"hubspot_lifecyclestage": "x"}
    assert utm.data["utm_source"] == "ads"


def test_hubspot_number_of_employees_band_is_a_company_size() -> None:
    event = hubspot_event(
        3, "contact.propertyChange", propertyName="numemployees", propertyValue="25-50"
    )

    (item,) = parse_hubspot([event])

    assert LeadIn.model_validate({**item.data, "email": "a@x.io"}).company_size == 25


@pytest.mark.parametrize("cleared", ["", "  ", None])
def test_hubspot_property_cleared_in_hubspot_changes_nothing_here(cleared: str | None) -> None:
    event = hubspot_event(
        9, "contact.propertyChange", propertyName="jobtitle", propertyValue=cleared
    )

    (item,) = parse_hubspot([event])

    assert item.error is None
    assert item.data == {
        "external_ids": {"hubspot": "123"},
        "source": "marketing",
        "channel": None,
    }
    assert LeadIn.model_validate(item.data).job_title is None


def test_hubspot_event_without_an_object_id_is_an_item_error() -> None:
    event = hubspot_event(7, "contact.creation")
    del event["objectId"]

    (item,) = parse_hubspot([event])

    assert (item.delivery_id, item.error) == ("hubspot:62515:7", "event has no objectId")


@pytest.mark.parametrize("body", [b'{"eventId": 1}', b"not json"])
def test_hubspot_body_that_is_not_a_json_array_is_a_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError):
        ADAPTERS["hubspot"].parse(signed_hubspot_request(body), HUBSPOT)


def standard_request(event: dict[str, Any], at: datetime = NOW) -> InboundRequest:
    payload = json.dumps(event)
    signature = Webhook(STANDARD.secret).sign("msg_2b7", at, payload)
    headers = {
        "webhook-id": "msg_2b7",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": f"v1,bm90LXRoaXMtb25l {signature}",
    }
    return InboundRequest(
        "POST", "https://crm.example.com/v1/webhooks/standard", headers, payload.encode()
    )


def test_standard_webhook_signed_by_the_reference_library_is_accepted_and_mapped() -> None:
    event = {
        "type": "lead.captured",
        "timestamp": "2026-03-02T12:00:00Z",
        "data": {"email": "a@x.io"},
    }
    request = standard_request(event)

    ADAPTERS["standard"].verify(request, STANDARD, now=NOW)
    (item,) = ADAPTERS["standard"].parse(request, STANDARD)

    assert (item.delivery_id, item.kind, item.error) == ("standard:msg_2b7", "lead", None)
    assert item.data == {"email": "a@x.io", "source": "marketing", "channel": "web_form"}


def test_standard_webhook_with_a_tampered_body_is_rejected() -> None:
    signed = standard_request({"type": "lead.captured", "data": {"email": "a@x.io"}})
    tampered = InboundRequest("POST", signed.url, signed.headers, signed.body.replace(b"a@", b"b@"))

    with pytest.raises(SignatureError, match="no webhook-signature entry matches"):
        ADAPTERS["standard"].verify(tampered, STANDARD, now=NOW)


def test_standard_webhook_with_a_non_ascii_signature_is_rejected_not_crashed() -> None:
    signed = standard_request({"type": "lead.captured", "data": {}})
    headers = {**signed.headers, "webhook-signature": "v1,\u00e9t\u00e9"}

    with pytest.raises(SignatureError, match="no webhook-signature entry matches"):
        ADAPTERS["standard"].verify(
            InboundRequest("POST", signed.url, headers, signed.body), STANDARD, now=NOW
        )


def test_standard_webhook_is_judged_fresh_against_the_given_now_not_the_wall_clock() -> None:
    request = standard_request({"type": "lead.captured", "data": {}}, at=NOW - timedelta(hours=1))

    ADAPTERS["standard"].verify(request, STANDARD, now=NOW - timedelta(hours=1, minutes=4))
    with pytest.raises(SignatureError, match="more than 5 minutes old"):
        ADAPTERS["standard"].verify(request, STANDARD, now=NOW)


def test_standard_webhook_activity_is_mapped_without_lead_defaults() -> None:
    data = {"activity_type": "page_view", "occurred_at": "2026-03-02T11:59:00Z", "visitor_id": "v1"}
    request = standard_request({"type": "activity.recorded", "data": data})

    (item,) = ADAPTERS["standard"].parse(request, STANDARD)

    assert (item.kind, item.data) == ("activity", data)


def test_standard_webhook_of_an_unknown_type_becomes_an_item_error() -> None:
    request = standard_request({"type": "invoice.paid", "data": {}})

    (item,) = ADAPTERS["standard"].parse(request, STANDARD)

    assert (item.delivery_id, item.data) == ("standard:msg_2b7", {})
    assert item.error == "unsupported event type invoice.paid"


def marketo_request(body: Any, token: str | None = "t0k3n") -> InboundRequest:
    headers = {} if token is None else {"x-marketo-token": token}
    return InboundRequest(
        "POST", "https://crm.example.com/v1/webhooks/marketo", headers, json.dumps(body).encode()
    )


@pytest.mark.parametrize(("token", "reason"), [("wrong", "does not match"), (None, "missing")])
def test_marketo_request_without_the_shared_token_is_rejected(
    token: str | None, reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        ADAPTERS["marketo"].verify(marketo_request({}, token), MARKETO, now=NOW)


def test_marketo_request_with_the_shared_token_in_the_configured_header_is_accepted() -> None:
    ADAPTERS["marketo"].verify(marketo_request({}), MARKETO, now=NOW)


def test_marketo_array_maps_known_fields_and_keeps_unknown_ones_as_custom() -> None:
    leads = [
        {"leadId": 42, "email": "a@x.io", "firstName": "Ana", "score": "87"},
        {"email": "b@x.io", "title": "CTO"},
    ]

    first, second = ADAPTERS["marketo"].parse(marketo_request(leads), MARKETO)

    assert first.data == {
        "source": "marketing",
        "channel": None,
        "external_ids": {"marketo": "42"},
        "email": "a@x.io",
        "first_name": "Ana",
        "custom": {"marketo_score": "87"},
    }
    assert first.delivery_id.startswith("marketo:42:")
    assert (second.data["job_title"], second.error) == ("CTO", None)


def test_marketo_empty_and_null_values_are_not_given() -> None:
    # A template renders a token the lead has no value for as "": one blank field must not
    # fail the lead, nor an empty id become an identity everyone shares.
    source = SourceConfig("mk", "marketo", "t", field_map={"sfdcId": "external_ids.salesforce"})
    lead = {
        "leadId": "77",
        "email": "kim@wayne.com",
        "firstName": "Kim",
        "lastName": "",
        "phone": "",
        "title": "  ",
        "numberOfEmployees": "",
        "sfdcId": "",
        "score": None,
    }

    (item,) = ADAPTERS["marketo"].parse(marketo_request(lead), source)

    assert item.error is None
    assert item.data == {
        "source": "marketing",
        "channel": None,
        "external_ids": {"marketo": "77"},
        "email": "kim@wayne.com",
        "first_name": "Kim",
    }
    assert LeadIn.model_validate(item.data).first_name == "Kim"


def test_marketo_object_without_email_or_lead_id_is_an_item_error() -> None:
    (item,) = ADAPTERS["marketo"].parse(
        marketo_request({"firstName": "Ana", "leadId": ""}), MARKETO
    )

    assert (item.data, item.error) == ({}, "object has neither an email nor a leadId")


def test_every_marketo_object_posted_is_a_delivery_of_its_own() -> None:
    # Marketo sends no event id and never sends a webhook again: the same content posted
    # later is a new delivery (a value that came back), not a retry to drop.
    first = ADAPTERS["marketo"].parse(marketo_request({"leadId": 7, "email": "a@x.io"}), MARKETO)
    again = ADAPTERS["marketo"].parse(marketo_request({"email": "a@x.io", "leadId": 7}), MARKETO)

    assert first[0].delivery_id.startswith("marketo:7:")
    assert first[0].delivery_id != again[0].delivery_id
    # what was sent, whatever the key order: the same digest
    assert first[0].delivery_id.split(":")[2] == again[0].delivery_id.split(":")[2]


def test_every_adapter_is_registered_under_its_provider_name() -> None:
    assert {name: adapter.name for name, adapter in ADAPTERS.items()} == {
        "hubspot": "hubspot",
        "standard": "standard",
        "marketo": "marketo",
    }

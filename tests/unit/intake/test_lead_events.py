"""lead.captured and lead.updated are encoded by hand: they must decode as their models and
equal what the models themselves serialize."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from services.intake import domains
from services.intake.canonical import PII_FIELDS, LeadCapture
from services.intake.identity import KnownLead
from services.intake.importing import ImportedLead
from services.intake.leads import _public_changes, captured_event, updated_event
from shared.events.payloads import LeadCaptured, LeadUpdated

LEAD = str(uuid.uuid4())
ACCOUNT = str(uuid.uuid4())


def _lead(row: dict[str, Any], account: str | None) -> tuple[KnownLead, ImportedLead]:
    item = ImportedLead.of(LeadCapture.model_validate(row))
    profile = item.profile()
    lead = KnownLead(
        id=LEAD,
        email=item.email,
        source=item.source,
        account_id=account,
        profile=profile,
        field_sources=dict.fromkeys(profile, item.source),
        external_ids=set(item.external_ids.items()),
    )
    return lead, item


ROWS = [
    {"email": "ana@acme.com"},
    {
        "email": "Zoë.Müller@Bücher.de",
        "first_name": "Zoë",
        "last_name": "Müller",
        "phone": "+49 30 1234567",
        "company": "Bücher & Söhne",
        "company_domain": "bücher.de",
        "job_title": 'Head of "Growth"\n',
        "country": "Germany",
        "company_size": 45,
        "marketing_consent": False,
        "source": "sales",
        "channel": "webinar",
        "campaign": "q3",
        "utm_source": "li",
        "external_ids": {"hubspot": "123", "salesforce": "00Q1"},
        "custom": {"plan": "pro", "seats": 3, "beta": True, "ratio": 0.5},
        "visitor_id": "v-1",
    },
    {"email": "someone@gmail.com", "company": "Self", "marketing_consent": True},
]


@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("account", [ACCOUNT, None])
def test_lead_captured_is_what_the_model_would_send(
    row: dict[str, Any], account: str | None
) -> None:
    lead, item = _lead(row, account)
    encoded = captured_event(lead, item)
    assert encoded.model is LeadCaptured
    domain = lead.email.rsplit("@", 1)[1] if lead.email else None
    expected = LeadCaptured(
        lead_id=uuid.UUID(lead.id),
        source=lead.source,
        channel=item.channel,
        campaign=item.campaign,
        account_id=uuid.UUID(account) if account else None,
        email_domain=domain,
        email_kind=domains.email_kind(domain) if domain else None,
        profile={k: v for k, v in lead.profile.items() if k not in PII_FIELDS},
        external_ids=dict(item.external_ids),
    )
    assert LeadCaptured.model_validate_json(encoded.data) == expected
    assert orjson.loads(encoded.data) == orjson.loads(expected.model_dump_json())
    assert not PII_FIELDS & set(orjson.loads(encoded.data)["profile"])


@pytest.mark.parametrize(
    ("changes", "moved_to"),
    [
        ({"job_title": "CEO", "company_size": 200}, None),
        ({"email": "ana@new.example", "first_name": "Ana", "custom": {"x": 1}}, ACCOUNT),
        ({}, ACCOUNT),
        ({"marketing_consent": True, "country": "FR"}, None),
    ],
)
def test_lead_updated_is_what_the_model_would_send(
    changes: dict[str, Any], moved_to: str | None
) -> None:
    lead, item = _lead({"email": "ana@acme.com", "source": "sales"}, ACCOUNT)
    encoded = updated_event(lead, item, changes, moved_to)
    assert encoded.model is LeadUpdated
    expected = LeadUpdated(
        lead_id=uuid.UUID(lead.id),
        source=item.source,
        changes=_public_changes(changes),
        changed_pii=sorted(k for k in changes if k in PII_FIELDS),
        account_id=uuid.UUID(moved_to) if moved_to else None,
    )
    assert LeadUpdated.model_validate_json(encoded.data) == expected
    assert orjson.loads(encoded.data) == orjson.loads(expected.model_dump_json())
    decoded = orjson.loads(encoded.data)
    assert "email" not in decoded["changes"] and "first_name" not in decoded["changes"]

"""lead.captured and lead.updated are encoded by hand: they must decode as their models and
equal what the models themselves serialize."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from services.intake import domains
from services.intake.canonical import PII_FIELDS, LeadCapture
from services.intake.identity import KnownLead
from services.intake.import_validation import unpack, validate_packed
from services.intake.importing import ImportedLead
from services.intake.leads import (
    LeadInput,
    _account_domain,
    _public_changes,
    captured_event,
    updated_event,
)
from shared.events.payloads import LeadCaptured, LeadUpdated

LEAD = str(uuid.uuid4())
ACCOUNT = str(uuid.uuid4())


def _imported(row: dict[str, Any]) -> ImportedLead:
    """An import's row as validated (`lead.captured`'s fields computed with it)."""
    return ImportedLead.of(LeadCapture.model_validate(row))


def _from_the_pool(row: dict[str, Any]) -> ImportedLead:
    """The same, validated in the import's pool and sent back."""
    (parsed,) = unpack(validate_packed([(1, orjson.dumps(row).decode(), None)]))
    assert parsed.lead is not None
    return parsed.lead


def _bare(row: dict[str, Any]) -> ImportedLead:
    """An `ImportedLead` made without `of`: nothing computed ahead."""
    full = _imported(row)
    return full._replace(account=None, captured=None)


# An API or webhook lead (`LeadIn`; `LeadCapture` is one) and an import's row, three ways.
ITEMS: dict[str, Callable[[dict[str, Any]], LeadInput]] = {
    "api": LeadCapture.model_validate,
    "import": _imported,
    "import-pool": _from_the_pool,
    "import-bare": _bare,
}


def _lead(
    row: dict[str, Any],
    account: str | None,
    make: Callable[[dict[str, Any]], LeadInput] = _imported,
) -> tuple[KnownLead, LeadInput]:
    item = make(row)
    assert item.email is not None
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
@pytest.mark.parametrize("kind", ITEMS)
def test_lead_captured_is_what_the_model_would_send(
    row: dict[str, Any], account: str | None, kind: str
) -> None:
    lead, item = _lead(row, account, ITEMS[kind])
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
    ("row", "account_domain"),
    [(ROWS[0], "acme.com"), (ROWS[1], "xn--bcher-kva.de"), (ROWS[2], None)],
)
@pytest.mark.parametrize("kind", ITEMS)
def test_a_new_leads_account_domain_is_its_inputs(
    row: dict[str, Any], account_domain: str | None, kind: str
) -> None:
    lead, item = _lead(row, None, ITEMS[kind])
    assert item.account_domain() == _account_domain(lead) == account_domain


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

"""Imports keep good rows and report bad ones by line; activities find their lead."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import import_job
from services.intake.canonical import LeadCapture
from services.intake.import_validation import STATE_KEY, ImportValidator
from services.intake.models import accounts, leads
from shared.db import after_commit, before_commit
from tests.api.conftest import Intake

NDJSON = b"""{"email": "li@hooli.com", "company_size": 40}
{"email": "broken"}

{"email": "mo@hooli.com", "country": "Narnia"}
not json at all
{"email": "li@HOOLI.com", "job_title": "CTO"}
{"email": "al@hooli.com", "country": "DE", "phone": "call me"}
"""

CSV = (
    b"email,first_name,company_size,external_ids.salesforce,custom.tier\r\n"
    b"zoe@umbrella.com,Zoe,1200,00Q1,gold\r\n"
    b'yan@umbrella.com,"Yan, Jr.",twelve,00Q2,\r\n'
    b"xi@umbrella.com,Xi,,00Q3,silver\r\n"
)


async def post_import(
    intake: Intake, body: bytes, kind: str = "text/csv", *, role: str | None = None
) -> httpx.Response:
    """`POST /v1/leads/import` of `body` (CSV unless `kind` says otherwise)."""
    headers = {**(intake.auth(role) if role else intake.auth()), "content-type": kind}
    return await intake.client.post("/v1/leads/import", content=body, headers=headers)


async def test_an_ndjson_import_keeps_good_rows_and_reports_bad_ones_by_line(
    intake: Intake,
) -> None:
    response = await post_import(intake, NDJSON, "application/x-ndjson")

    summary = response.json()
    assert response.status_code == 200
    assert (summary["rows"], summary["created"], summary["updated"], summary["failed"]) == (
        6,
        1,
        1,
        4,
    )
    assert [(e["line"], e["field"]) for e in summary["errors"]] == [
        (2, "email"),
        (4, "country"),
        (5, "row"),
        (7, "phone"),
    ]
    assert len(await intake.events("handoff.lead.captured", 2)) == 2


async def test_a_csv_import_maps_nested_columns_and_reports_bad_cells(intake: Intake) -> None:
    response = await post_import(intake, CSV, role="marketing")

    summary = response.json()
    assert (summary["created"], summary["failed"]) == (2, 1)
    assert summary["errors"] == [
        {"line": 3, "field": "company_size", "reason": summary["errors"][0]["reason"]}
    ]
    events = await intake.events("handoff.lead.captured", 2)  # two leads: two partitions
    zoe = next(e for e in events if e["data"]["external_ids"] == {"salesforce": "00Q1"})
    assert zoe["data"]["profile"]["company_size"] == 1200
    assert "custom" not in zoe["data"]["profile"]  # free-form: may hold personal data
    stored = (await intake.client.get(f"/v1/leads/{zoe['key']}", headers=intake.auth())).json()
    assert stored["profile"]["custom"] == {"tier": "gold"}


async def test_a_csv_headed_as_a_spreadsheet_heads_it_imports(intake: Intake) -> None:
    csv = b"Email,First Name,Job-Title,COMPANY SIZE,custom.Tier\r\nana@acme.com,Ana,CTO,40,Gold\r\n"
    response = await post_import(intake, csv)

    assert (response.json()["created"], response.json()["failed"]) == (1, 0)
    (event,) = await intake.events("handoff.lead.captured", 1)
    stored = (await intake.client.get(f"/v1/leads/{event['key']}", headers=intake.auth())).json()
    profile = stored["profile"]
    assert (profile["first_name"], profile["job_title"], profile["company_size"]) == (
        "Ana",
        "CTO",
        40,
    )
    assert profile["custom"] == {"Tier": "Gold"}  # an attribute's key keeps its case


async def test_an_external_id_is_one_whatever_the_case_of_its_providers_name(
    intake: Intake,
) -> None:
    known = await intake.client.post(
        "/v1/leads",
        headers=intake.auth(),
        json={"email": "old@acme.com", "external_ids": {"hubspot": "501"}},
    )
    csv = b"Email,First Name,External IDs.HubSpot\r\nnew@acme.com,Ana,501\r\n"
    response = await post_import(intake, csv)

    assert (response.json()["created"], response.json()["updated"]) == (0, 1)
    lead_id = known.json()["lead_id"]
    stored = (await intake.client.get(f"/v1/leads/{lead_id}", headers=intake.auth())).json()
    assert (stored["email"], stored["external_ids"]) == ("new@acme.com", {"hubspot": ["501"]})


async def test_an_import_in_an_unknown_format_is_refused(intake: Intake) -> None:
    response = await post_import(intake, b"<xml/>", "application/xml")
    assert response.status_code == 415


async def test_an_anonymous_visitors_history_is_stitched_when_they_identify(intake: Intake) -> None:
    auth = intake.auth()
    for kind in ("page_view", "pricing_page_view"):
        visit = await intake.client.post(
            "/v1/activities",
            headers=auth,
            json={
                "activity_type": kind,
                "visitor_id": "v-42",
                "occurred_at": "2026-11-01T10:00:00Z",
            },
        )
        assert visit.json()["anonymous"] is True
    assert await intake.events("handoff.lead.activity", 0) == []

    lead = await intake.client.post(
        "/v1/leads", headers=auth, json={"email": "sam@stark.com", "visitor_id": "v-42"}
    )
    later = await intake.client.post(
        "/v1/activities", headers=auth, json={"activity_type": "demo_request", "visitor_id": "v-42"}
    )

    events = await intake.events("handoff.lead.activity", 3)
    assert later.json()["lead_id"] == lead.json()["lead_id"]
    assert [e["data"]["activity_type"] for e in events] == [
        "page_view",
        "pricing_page_view",
        "demo_request",
    ]
    assert {e["key"] for e in events} == {lead.json()["lead_id"]}


async def test_a_visitor_identifying_through_an_activity_brings_their_history(
    intake: Intake,
) -> None:
    auth = intake.auth()
    await intake.client.post(
        "/v1/activities",
        headers=auth,
        json={"activity_type": "pricing_page_view", "visitor_id": "v-7"},
    )
    lead = await intake.client.post("/v1/leads", headers=auth, json={"email": "ana@acme.com"})
    form = await intake.client.post(
        "/v1/activities",
        headers=auth,
        json={"activity_type": "form_submit", "email": "ana@acme.com", "visitor_id": "v-7"},
    )
    later = await intake.client.post(
        "/v1/activities", headers=auth, json={"activity_type": "page_view", "visitor_id": "v-7"}
    )

    events = await intake.events("handoff.lead.activity", 3)
    assert form.json()["lead_id"] == later.json()["lead_id"] == lead.json()["lead_id"]
    assert [e["data"]["activity_type"] for e in events] == [
        "pricing_page_view",
        "form_submit",
        "page_view",
    ]
    assert {e["key"] for e in events} == {lead.json()["lead_id"]}


async def test_rows_that_are_not_utf8_are_reported_not_stored_garbled(intake: Intake) -> None:
    csv = "email,first_name\r\njose@acme.com,José\r\nana@acme.com,Ana\r\n".encode("cp1252")
    response = await post_import(intake, csv)

    summary = response.json()
    assert (summary["created"], summary["failed"]) == (1, 1)
    assert [(e["line"], e["field"]) for e in summary["errors"]] == [(2, "row")]
    assert "UTF-8" in summary["errors"][0]["reason"]


async def stored_emails(intake: Intake) -> list[str]:
    async with intake.runtime.db.engine.connect() as conn:
        return sorted((await conn.execute(select(leads.c.email))).scalars())


async def test_a_csv_with_classic_mac_line_ends_imports_every_row(intake: Intake) -> None:
    """Lone CRs end the lines of a file whose first line ends with one (old Mac exports)."""
    csv = b'email,first_name\r m@acme.com,M\rn@acme.com,"N\rNorth"\rbroken,B\ro@acme.com,O\r'
    response = await post_import(intake, csv)

    summary = response.json()
    assert response.status_code == 200
    assert (summary["rows"], summary["created"], summary["failed"]) == (4, 3, 1)
    assert [(e["line"], e["field"]) for e in summary["errors"]] == [(5, "email")]
    assert await stored_emails(intake) == ["m@acme.com", "n@acme.com", "o@acme.com"]


async def test_a_lone_cr_in_an_unquoted_csv_cell_is_a_row_error_and_the_import_goes_on(
    intake: Intake,
) -> None:
    csv = (
        b"email,first_name\n"
        b"a@acme.com,A\n"
        b"x@acme.com,Foo\rBar\n"
        b'q@acme.com,"Quoted\rCR"\n'
        b"b@acme.com,B\n"
    )
    response = await post_import(intake, csv)

    summary = response.json()
    assert response.status_code == 200
    assert (summary["rows"], summary["created"], summary["failed"]) == (4, 3, 1)
    [error] = summary["errors"]
    assert (error["line"], error["field"]) == (3, "row")
    assert "carriage return" in error["reason"]
    assert await stored_emails(intake) == ["a@acme.com", "b@acme.com", "q@acme.com"]


@pytest.mark.parametrize(
    ("csv", "problem"),
    [
        ("email,société\ne@acme.com,x\nf@acme.com,y\n".encode("latin-1"), "UTF-8"),
        (b"email," + b"x" * 1_000_001 + b"\ne@acme.com,x\nf@acme.com,y\n", "longer than"),
        (b'email,"first_name\ne@acme.com,x\n', "unterminated quoted field"),
        (
            b"email,Email,first_name\nq@acme.com,r@acme.com,Q\n",
            "columns 1 ('email') and 2 ('Email') are both the field email: keep one of them",
        ),
    ],
    ids=["not-utf8", "too-long", "unterminated", "one-field-twice"],
)
async def test_a_csv_whose_header_cannot_be_read_is_refused_whole(
    intake: Intake, csv: bytes, problem: str
) -> None:
    response = await post_import(intake, csv)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == "header"
    assert error["reason"].startswith("line 1 (the header): ")
    assert problem in error["reason"]
    assert await stored_emails(intake) == []


async def test_a_csv_export_imports_by_its_headings_and_names_the_columns_it_ignored(
    intake: Intake,
) -> None:
    """A CRM's export: its headings for lead fields are read as those fields, its other
    columns are left out of every row and named in the summary (not an error a row)."""
    csv = (
        b"Email Address,First Name,Company Name,Website,Country/Region,Notes,Notes,\n"
        b"ann@initech.com,Ann,Initech,https://www.initech.com/about,Germany,a,b,x\n"
    )
    response = await post_import(intake, csv)

    summary = response.json()
    assert (summary["created"], summary["failed"]) == (1, 0)
    assert summary["ignored_columns"] == ["Notes", "Notes", "column 8 (no heading)"]
    (captured,) = await intake.events("handoff.lead.captured", 1)
    lead = await intake.client.get(f"/v1/leads/{captured['key']}", headers=intake.auth())
    assert lead.json()["email"] == "ann@initech.com"
    assert {k: lead.json()["profile"][k] for k in ("company", "company_domain", "country")} == {
        "company": "Initech",
        "company_domain": "initech.com",
        "country": "DE",
    }


async def test_an_activity_for_an_unknown_email_is_a_404_naming_the_field(intake: Intake) -> None:
    response = await intake.client.post(
        "/v1/activities",
        headers=intake.auth(),
        json={"activity_type": "email_click", "email": "ghost@nowhere.org"},
    )
    assert response.status_code == 404
    assert response.json()["errors"][0]["field"] == "email"


async def test_an_activity_naming_its_lead_twice_must_name_one_lead(intake: Intake) -> None:
    ana = await intake.client.post("/v1/leads", headers=intake.auth(), json={"email": "a@acme.com"})
    await intake.client.post("/v1/leads", headers=intake.auth(), json={"email": "b@acme.com"})
    lead_id = ana.json()["lead_id"]

    async def activity(**who: str) -> Any:
        body = {"activity_type": "email_click", **who}
        return await intake.client.post("/v1/activities", headers=intake.auth(), json=body)

    same = await activity(lead_id=lead_id.upper(), email="A@acme.com")
    other = await activity(lead_id=lead_id, email="b@acme.com")
    not_an_id = await activity(lead_id="ana-123")

    assert (same.status_code, same.json()["lead_id"]) == (202, lead_id)
    assert other.status_code == 409
    assert other.json()["errors"] == [
        {"field": "email", "reason": f"lead {lead_id} does not have this email: name one lead"}
    ]
    assert not_an_id.status_code == 422
    assert not_an_id.json()["errors"] == [
        {"field": "lead_id", "reason": "must be a lead's id (a UUID)"}
    ]


async def test_an_activity_whose_external_id_is_another_leads_must_name_one_lead(
    intake: Intake,
) -> None:
    auth = intake.auth()
    ana = await intake.client.post(
        "/v1/leads", headers=auth, json={"email": "a@acme.com", "external_ids": {"hubspot": "h-a"}}
    )
    await intake.client.post(
        "/v1/leads", headers=auth, json={"email": "b@acme.com", "external_ids": {"hubspot": "h-b"}}
    )
    lead_id = ana.json()["lead_id"]

    async def activity(**who: Any) -> Any:
        body = {"activity_type": "email_click", **who}
        return await intake.client.post("/v1/activities", headers=auth, json=body)

    by_id = await activity(lead_id=lead_id, external_ids={"hubspot": "h-b"})
    by_email = await activity(email="a@acme.com", external_ids={"hubspot": "h-b"})
    by_ids = await activity(external_ids={"hubspot": "h-a", "marketo": "m-9"})
    one_lead = await activity(lead_id=lead_id, external_ids={"hubspot": "h-a", "marketo": "m-9"})

    assert (by_id.status_code, by_email.status_code) == (409, 409)
    assert by_id.json()["errors"] == [
        {
            "field": "external_ids.hubspot",
            "reason": "'h-b' is another lead's than the one its lead_id names: name one lead",
        }
    ]
    assert by_email.json()["errors"][0]["field"] == "external_ids.hubspot"
    # an id no lead has says nothing either way
    assert [(r.status_code, r.json()["lead_id"]) for r in (by_ids, one_lead)] == [
        (202, lead_id),
        (202, lead_id),
    ]


async def test_an_activity_must_say_who_did_it(intake: Intake) -> None:
    response = await intake.client.post(
        "/v1/activities", headers=intake.auth(), json={"activity_type": "page_view"}
    )
    assert response.status_code == 422


async def test_an_import_may_exceed_the_body_limit_that_holds_for_single_leads(
    intake: Intake,
) -> None:
    padding = {f"note{i}": "x" * 900 for i in range(12)}  # ~11 kB a row
    rows = b"\n".join(
        orjson.dumps({"email": f"p{i}@bulk.com", "custom": padding}) for i in range(110)
    )
    assert len(rows) > 1_048_576

    imported = await post_import(intake, rows, "application/x-ndjson")
    single = await intake.client.post(
        "/v1/leads", content=rows, headers={**intake.auth(), "content-type": "application/json"}
    )

    assert imported.status_code == 200
    assert imported.json()["created"] == 110
    assert single.status_code == 413


MOVED_ROWS = b"""{"email": "ann@gmail.com", "first_name": "Ann"}
{"email": "ann@gmail.com", "company": "Acme", "company_domain": "acme.com"}
"""


@pytest.mark.parametrize("batch_size", [1000, 1], ids=["one-batch", "a-batch-each"])
async def test_a_lead_moved_to_an_account_by_its_second_row_says_so_in_any_batch(
    intake: Intake, batch_size: int
) -> None:
    """Created from free mail (no account), then given a company: lead.captured without an
    account, lead.updated with it, whether the rows share a batch or not."""
    runtime = intake.runtime
    runtime.settings = runtime.settings.model_copy(update={"import_batch_size": batch_size})
    response = await post_import(intake, MOVED_ROWS, "application/x-ndjson")

    assert (response.json()["created"], response.json()["updated"]) == (1, 1)
    captured, updated = await intake.events("handoff.lead.captured", 2)
    assert captured["type"] == "handoff.lead.captured.v1"
    assert (captured["data"]["account_id"], captured["data"]["profile"]) == (None, {})
    assert updated["type"] == "handoff.lead.updated.v1"
    assert updated["data"]["changes"] == {"company": "Acme", "company_domain": "acme.com"}
    lead = await intake.client.get(f"/v1/leads/{captured['key']}", headers=intake.auth())
    account = lead.json()["account"]
    assert account["domain"] == "acme.com"
    assert updated["data"]["account_id"] == account["id"]


KNOWN_LEAD_ROWS = b"""{"email": "bo@gmail.com", "job_title": "CTO"}
{"email": "bo@gmail.com", "company": "Acme", "company_domain": "acme.com"}
{"email": "bo@gmail.com", "company": "Initrode", "company_domain": "initrode.com"}
{"email": "bo@gmail.com", "first_name": "Bo"}
"""


@pytest.mark.parametrize("batch_size", [1000, 1], ids=["one-batch", "a-batch-each"])
async def test_a_known_lead_is_moved_by_the_rows_that_move_it_in_any_batch(
    intake: Intake, batch_size: int
) -> None:
    """A known lead changed by four rows, the second and the third giving it a company: each
    of those lead.updated events names the account it moved to, the others none, and the
    account of the company it passed through is named for that company, whether the rows
    share a batch or not."""
    created = await intake.client.post(
        "/v1/leads", headers=intake.auth(), json={"email": "bo@gmail.com"}
    )
    runtime = intake.runtime
    runtime.settings = runtime.settings.model_copy(update={"import_batch_size": batch_size})
    response = await post_import(intake, KNOWN_LEAD_ROWS, "application/x-ndjson")

    assert response.json()["updated"] == 4
    _captured, *updates = await intake.events("handoff.lead.captured", 5)
    assert [(u["data"]["changes"], u["data"]["changed_pii"]) for u in updates] == [
        ({"job_title": "CTO"}, []),
        ({"company": "Acme", "company_domain": "acme.com"}, []),
        ({"company": "Initrode", "company_domain": "initrode.com"}, []),
        ({}, ["first_name"]),  # (personal data is named on the bus, not shown)
    ]
    async with runtime.db.engine.connect() as conn:
        named = {
            domain: (account_id, name)
            for account_id, domain, name in await conn.execute(
                select(accounts.c.id, accounts.c.domain, accounts.c.name)
            )
        }
    assert {domain: name for domain, (_, name) in named.items()} == {
        "acme.com": "Acme",
        "initrode.com": "Initrode",
    }
    moved_to = [u["data"]["account_id"] for u in updates]
    assert moved_to == [None, named["acme.com"][0], named["initrode.com"][0], None]
    lead = await intake.client.get(f"/v1/leads/{created.json()['lead_id']}", headers=intake.auth())
    assert lead.json()["account"]["domain"] == "initrode.com"


IDENTITY_ROWS = b"""{"email": "ann@initech.com", "first_name": "Ann"}
{"email": "bea@initech.com", "external_ids": {"hubspot": "h-1"}}
{"email": "broken"}
{"email": "ANN@initech.com", "first_name": "Ann", "job_title": "CTO"}
{"email": "old@initech.com", "job_title": "CFO"}
{"email": "bea@initech.com", "external_ids": {"hubspot": "h-2"}}
{"email": "cy@initech.com", "external_ids": {"hubspot": "h-1"}}
{"email": "ann@initech.com", "first_name": "Ann"}
"""


@pytest.mark.parametrize(
    ("processes", "batch_size"), [(0, 1000), (1, 1000), (1, 2)], ids=["inline", "pool", "pool-2"]
)
async def test_an_import_resolves_identities_within_and_across_its_batches(
    intake: Intake, processes: int, batch_size: int
) -> None:
    """Duplicates in one batch, a bad row among good ones, a row of an existing lead."""
    runtime = intake.runtime
    runtime.settings = runtime.settings.model_copy(update={"import_batch_size": batch_size})
    validator = runtime.state[STATE_KEY] = ImportValidator(processes)
    runner = asyncio.ensure_future(validator.run())
    try:
        # with a pool, every row is validated there (none while it starts)
        assert await validator.started() == bool(processes)
        old = await intake.client.post(
            "/v1/leads", headers=intake.auth(), json={"email": "old@initech.com"}
        )
        response = await post_import(intake, IDENTITY_ROWS, "application/x-ndjson")
    finally:
        validator.stop()
        await runner

    summary = response.json()
    # updated: ann's job title, old's, bea linked to h-2, bea found by h-1 with cy's email
    assert (summary["rows"], summary["created"], summary["updated"]) == (8, 2, 4)
    assert (summary["unchanged"], summary["failed"]) == (1, 1)
    assert [(e["line"], e["field"]) for e in summary["errors"]] == [(3, "email")]
    events = await intake.events("handoff.lead.captured", 7)  # the topic of lead events
    by_lead: dict[str, list[tuple[str, dict[str, object]]]] = {}
    for event in events:
        by_lead.setdefault(event["key"], []).append((event["type"], event["data"]))
    old_id = old.json()["lead_id"]
    assert len(events) == 7 and len(by_lead) == 3
    (ann,) = (k for k, v in by_lead.items() if k != old_id and len(v) == 2)
    (bea,) = (k for k, v in by_lead.items() if k != old_id and len(v) == 3)
    assert [t for t, _ in by_lead[old_id]] == [
        "handoff.lead.captured.v1",
        "handoff.lead.updated.v1",
    ]
    assert by_lead[old_id][1][1]["changes"] == {"job_title": "CFO"}  # the changed field only
    assert by_lead[ann][1][1]["changes"] == {"job_title": "CTO"}
    # captured with its first row, changed by a later one (the same batch, but for pool-2):
    # lead.captured says what it was captured with, lead.updated the change
    assert "job_title" not in by_lead[ann][0][1]["profile"]
    assert by_lead[bea][0][1]["external_ids"] == {"hubspot": "h-1"}
    assert by_lead[bea][1][1]["external_ids"] == {"hubspot": "h-2"}  # linked, nothing changed
    assert by_lead[bea][1][1]["changes"] == {}
    assert by_lead[bea][2][1]["changed_pii"] == ["email"]  # found by h-1, email changed
    view = (await intake.client.get(f"/v1/leads/{bea}", headers=intake.auth())).json()
    assert view["email"] == "cy@initech.com"
    assert sorted(view["external_ids"]["hubspot"]) == ["h-1", "h-2"]


def two_batches(second: str) -> bytes:
    first = '{"email": "ann@one.com"}\n{"email": "bo@two.com"}\n'
    return (first + second).encode()


@pytest.mark.parametrize(
    ("second", "overlaps", "accounts"),
    [
        ('{"email": "cy@three.com"}\n{"email": "di@four.com"}\n', True, 4),
        ('{"email": "ANN@one.com", "job_title": "CTO"}\n{"email": "di@four.com"}\n', False, 3),
        ('{"email": "cy@one.com"}\n{"email": "di@four.com"}\n', False, 3),  # one.com's account
    ],
    ids=["independent", "same-lead", "new-account"],
)
async def test_on_postgresql_a_batch_is_captured_while_the_one_before_is_written(
    intake: Intake, monkeypatch: pytest.MonkeyPatch, second: str, overlaps: bool, accounts: int
) -> None:
    """The second batch starts while the first commits, unless it names a lead of the
    first or needs an account the first creates; on SQLite batches take turns."""
    runtime = intake.runtime
    runtime.settings = runtime.settings.model_copy(update={"import_batch_size": 2})
    steps: list[str] = []
    real = import_job.capture_batch

    async def recorded(session: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        batch = f"batch {len([s for s in steps if s.startswith('start')]) + 1}"
        steps.append(f"start {batch}")

        async def slow_commit(_session: AsyncSession) -> None:
            await asyncio.sleep(0.1)  # a write that takes a while

        before_commit(session, slow_commit)
        after_commit(session, lambda: steps.append(f"commit {batch}"))
        return await real(session, *args, **kwargs)

    monkeypatch.setattr(import_job, "capture_batch", recorded)
    response = await post_import(intake, two_batches(second), "application/x-ndjson")

    assert response.status_code == 200 and response.json()["failed"] == 0
    overlapped = ["start batch 1", "start batch 2", "commit batch 1", "commit batch 2"]
    in_turn = ["start batch 1", "commit batch 1", "start batch 2", "commit batch 2"]
    postgres = runtime.db.is_postgres
    assert steps == (overlapped if postgres and overlaps else in_turn)
    events = await intake.events("handoff.lead.captured", 4)  # a row each: captured or updated
    made = [e["data"]["account_id"] for e in events if e["type"] == "handoff.lead.captured.v1"]
    assert None not in made and len(set(made)) == accounts  # one account per domain


class CommitHooks:
    """Counts an import's batch captures (`calls`); `hooks[n]` runs as the n-th commits."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        hooks: dict[int, Callable[[AsyncSession], Awaitable[None]]],
    ) -> None:
        self.calls = 0
        real = import_job.capture_batch

        async def capture(session: AsyncSession, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if hook := hooks.get(self.calls):
                before_commit(session, hook)
            return await real(session, *args, **kwargs)

        monkeypatch.setattr(import_job, "capture_batch", capture)


async def test_an_import_stops_at_a_failed_batch_and_leaves_nothing_running(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = intake.runtime
    runtime.settings = runtime.settings.model_copy(update={"import_batch_size": 2})
    real = import_job.capture_batch
    calls = 0

    async def failing(session: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the database went away")
        before_commit(session, lambda _session: asyncio.sleep(0.05))
        return await real(session, *args, **kwargs)

    monkeypatch.setattr(import_job, "capture_batch", failing)
    rows = two_batches('{"email": "cy@three.com"}\n{"email": "di@four.com"}\n')
    response = await post_import(
        intake, rows + b'{"email": "ed@five.com"}\n', "application/x-ndjson"
    )

    assert response.status_code == 500
    assert calls == 2  # the third batch never started
    assert not [t for t in asyncio.all_tasks() if t.get_name() == import_job.BATCH_TASK]


async def test_a_batch_failing_as_it_commits_keeps_the_batches_before_and_starts_no_more(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batches already in flight beside the failed one end (and are kept if they
    commit, whole); no batch starts after the failure is known."""
    runtime = intake.runtime
    runtime.settings = runtime.settings.model_copy(update={"import_batch_size": 2})

    async def commit_fails(_session: AsyncSession) -> None:
        await asyncio.sleep(0.05)  # (on PostgreSQL the next batches are under way meanwhile)
        raise RuntimeError("the disk is full")

    async def slow_commit(_session: AsyncSession) -> None:
        await asyncio.sleep(0.2)  # still committing when the second fails

    captures = CommitHooks(monkeypatch, {2: commit_fails, 3: slow_commit})
    batches = [[f"{2 * b + 1}@d{b}.com", f"{2 * b + 2}@d{b}.com"] for b in range(10)]
    rows = "".join(f'{{"email": "{email}"}}\n' for batch in batches for email in batch)
    response = await post_import(intake, rows.encode(), "application/x-ndjson")

    assert response.status_code == 500
    async with runtime.db.engine.connect() as conn:
        stored = set((await conn.execute(select(leads.c.email))).scalars())
    kept = [b for b, batch in enumerate(batches, 1) if set(batch) <= stored]
    assert all(set(batch) <= stored or not set(batch) & stored for batch in batches)  # whole
    if runtime.db.is_postgres:  # the third was under way: it ends, and is kept
        assert 3 <= captures.calls <= 2 + import_job.IN_FLIGHT  # then nothing started
        assert kept == [1, *range(3, captures.calls + 1)]
    else:
        assert captures.calls == 2 and kept == [1]
    assert not [t for t in asyncio.all_tasks() if t.get_name() == import_job.BATCH_TASK]


@pytest.mark.integration
@pytest.mark.parametrize("intake", ["postgres"], indirect=True)  # (SQLite: one writer)
async def test_a_lead_made_elsewhere_while_a_batch_is_in_flight_makes_it_run_again(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another request creates a lead of the second batch after that batch's reads: its
    commit fails on the unique email, and it runs again, updating that lead."""
    runtime = intake.runtime
    runtime.settings = runtime.settings.model_copy(update={"import_batch_size": 2})
    real = import_job.capture_batch
    calls = 0

    async def elsewhere(session: AsyncSession) -> Any:
        lead = LeadCapture.model_validate({"email": "xi@three.com"})
        return await real(session, runtime.outbox, [lead], sales_owned=frozenset())

    async def raced(session: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        outcomes = await real(session, *args, **kwargs)
        if calls == 2:  # the second batch has read and worked out its changes
            await runtime.db.run(elsewhere)
        return outcomes

    monkeypatch.setattr(import_job, "capture_batch", raced)
    rows = two_batches('{"email": "xi@three.com", "job_title": "CTO"}\n{"email": "yu@four.com"}\n')
    response = await post_import(intake, rows, "application/x-ndjson")

    summary = response.json()
    assert response.status_code == 200 and calls == 3  # the second batch ran twice
    assert (summary["created"], summary["updated"], summary["failed"]) == (3, 1, 0)
    async with runtime.db.engine.connect() as conn:
        emails = list((await conn.execute(select(leads.c.email))).scalars())
    assert sorted(emails) == ["ann@one.com", "bo@two.com", "xi@three.com", "yu@four.com"]


@pytest.mark.parametrize("intake", ["sqlite"], indirect=True)  # (nothing else suspends it)
async def test_a_large_capture_lets_other_requests_in_as_it_goes(intake: Intake) -> None:
    """Capturing a thousand rows takes tens of milliseconds of CPU: it gives the event
    loop to other tasks (requests, the relay) every so many rows."""
    runtime = intake.runtime
    items = [LeadCapture.model_validate({"email": f"t{n}@acme.com"}) for n in range(600)]
    ticks, done = 0, False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    async def work(session: AsyncSession) -> int:
        before = ticks
        await import_job.capture_batch(session, runtime.outbox, items, sales_owned=frozenset())
        return ticks - before

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    during = await runtime.db.run(work)
    done = True
    await task

    assert during >= len(items) // 128


@pytest.mark.integration
@pytest.mark.parametrize("intake", ["postgres"], indirect=True)  # (SQLite: batches in turn)
async def test_no_batch_starts_once_one_has_failed_behind_a_slow_one(
    intake: Intake, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = intake.runtime
    runtime.settings = runtime.settings.model_copy(update={"import_batch_size": 2})

    async def slow_commit(_session: AsyncSession) -> None:
        await asyncio.sleep(0.3)

    async def commit_fails(_session: AsyncSession) -> None:
        raise RuntimeError("the disk is full")

    captures = CommitHooks(monkeypatch, {1: slow_commit, 2: commit_fails})
    rows = "".join(f'{{"email": "{n}@e{n}.com"}}\n' for n in range(20))  # 10 batches
    response = await post_import(intake, rows.encode(), "application/x-ndjson")

    assert response.status_code == 500
    assert captures.calls <= 3  # the third may start before the second has failed; no more

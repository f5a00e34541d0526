"""An email one lead gives up is taken by another in the same capture batch: the batch is
written as if its rows came one by one (the unique email is never held twice)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import select

from services.intake.models import lead_external_ids, leads
from tests.api.conftest import Intake
from tests.api.test_intake_webhooks import HUBSPOT_SECRET, add_source, contact_event, post_hubspot


async def import_rows(intake: Intake, rows: str) -> dict[str, Any]:
    response = await intake.client.post(
        "/v1/leads/import",
        content=rows.encode(),
        headers={**intake.auth(), "content-type": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    summary: dict[str, Any] = response.json()
    return summary


async def emails_by_external_id(intake: Intake) -> dict[str, str | None]:
    """Each lead's email by its (first) HubSpot id; leads without one under their email."""
    async with intake.runtime.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(leads.c.id, leads.c.email, lead_external_ids.c.external_id)
                .select_from(leads)
                .outerjoin(lead_external_ids, lead_external_ids.c.lead_id == leads.c.id)
                .order_by(lead_external_ids.c.external_id)
            )
        ).all()
    found: dict[str, str | None] = {}
    for _lead_id, email, external_id in rows:
        found.setdefault(external_id or f"({email})", email)
    return found


async def lead_events(intake: Intake, count: int) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The lead events so far (at least `count`), by lead: (type, data) in order."""
    by_lead: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for event in await intake.events("handoff.lead.captured", count):
        by_lead.setdefault(event["key"], []).append((event["type"], event["data"]))
    return by_lead


def with_hubspot(email: str, hubspot: str, **fields: str) -> str:
    row: dict[str, Any] = {"email": email, "external_ids": {"hubspot": hubspot}, **fields}
    return line(row)


def line(row: dict[str, Any]) -> str:
    return orjson.dumps(row).decode() + "\n"


@pytest.mark.parametrize("batch_size", [1000, 2], ids=["one-batch", "batches-of-2"])
async def test_an_import_row_takes_the_email_an_earlier_row_moved_off_a_lead(
    intake: Intake, batch_size: int
) -> None:
    """Lead A (hubspot 1) moves to new@; the next row names old@: a new lead takes it."""
    runtime = intake.runtime
    runtime.settings = runtime.settings.model_copy(update={"import_batch_size": batch_size})
    await import_rows(intake, with_hubspot("old@acme.com", "1"))

    summary = await import_rows(
        intake, with_hubspot("new@acme.com", "1") + line({"email": "old@acme.com"})
    )

    assert (summary["created"], summary["updated"], summary["failed"]) == (1, 1, 0)
    assert await emails_by_external_id(intake) == {
        "1": "new@acme.com",
        "(old@acme.com)": "old@acme.com",
    }
    by_lead = await lead_events(intake, 3)
    (moved,) = (events for events in by_lead.values() if len(events) == 2)
    (taker,) = (events for events in by_lead.values() if len(events) == 1)
    assert [t for t, _ in moved] == ["handoff.lead.captured.v1", "handoff.lead.updated.v1"]
    assert moved[1][1]["changed_pii"] == ["email"]
    assert moved[1][1]["account_id"] is None  # (acme.com's account still)
    assert taker[0][0] == "handoff.lead.captured.v1"
    assert taker[0][1]["account_id"] == moved[0][1]["account_id"]


@pytest.mark.parametrize("split", [False, True], ids=["one-batch-of-two", "across-batches"])
async def test_an_import_row_takes_the_email_a_row_moved_off_a_lead_in_batches_of_two(
    intake: Intake, split: bool
) -> None:
    """The move and the row taking its email in the second of two batches of two, or the
    move ending the first and the row beginning the second."""
    runtime = intake.runtime
    runtime.settings = runtime.settings.model_copy(update={"import_batch_size": 2})
    await import_rows(intake, with_hubspot("old@acme.com", "1"))
    move = with_hubspot("new@acme.com", "1") + line({"email": "old@acme.com", "job_title": "CTO"})
    others = [line({"email": "x@one.com"}), line({"email": "y@two.com"})]

    summary = await import_rows(
        intake, others[0] + move + others[1] if split else others[0] + others[1] + move
    )

    assert (summary["created"], summary["updated"], summary["failed"]) == (3, 1, 0)
    stored = await emails_by_external_id(intake)
    assert (stored["1"], stored["(old@acme.com)"]) == ("new@acme.com", "old@acme.com")


async def test_updated_leads_take_emails_freed_in_the_batch_whatever_order_they_came_in(
    intake: Intake,
) -> None:
    """B is touched first (its job title), then A gives up a@, then B takes it: B's update
    must not be written while A still holds a@."""
    await import_rows(intake, with_hubspot("a@acme.com", "1") + with_hubspot("b@acme.com", "2"))

    summary = await import_rows(
        intake,
        line({"email": "b@acme.com", "job_title": "CFO"})
        + with_hubspot("c@acme.com", "1")
        + with_hubspot("a@acme.com", "2"),
    )

    assert (summary["created"], summary["updated"], summary["failed"]) == (0, 3, 0)
    assert await emails_by_external_id(intake) == {"1": "c@acme.com", "2": "a@acme.com"}
    by_lead = await lead_events(intake, 5)
    updates = sorted(
        (data["changes"].get("job_title") or "", data["changed_pii"], data["account_id"] or "")
        for events in by_lead.values()
        for kind, data in events
        if kind == "handoff.lead.updated.v1"
    )
    assert updates == [("", ["email"], ""), ("", ["email"], ""), ("CFO", [], "")]


async def test_two_leads_swap_their_emails_in_one_batch(intake: Intake) -> None:
    """A: a@ -> tmp@ -> b@; B: b@ -> a@ (between A's two changes): a cycle, as stored."""
    await import_rows(intake, with_hubspot("a@acme.com", "1") + with_hubspot("b@other.com", "2"))

    summary = await import_rows(
        intake,
        with_hubspot("tmp@acme.com", "1")
        + with_hubspot("a@acme.com", "2")
        + with_hubspot("b@other.com", "1"),
    )

    assert (summary["created"], summary["updated"], summary["failed"]) == (0, 3, 0)
    assert await emails_by_external_id(intake) == {"1": "b@other.com", "2": "a@acme.com"}
    by_lead = await lead_events(intake, 5)
    for lead_id, events in by_lead.items():
        hubspot = events[0][1]["external_ids"]["hubspot"]
        announced = [data["account_id"] for _, data in events if data["account_id"]]
        stored = await intake.client.get(f"/v1/leads/{lead_id}", headers=intake.auth())
        account = stored.json()["account"]
        # each lead's account follows its email (the last announced is the one stored)
        assert account["domain"] == {"1": "other.com", "2": "acme.com"}[hubspot]
        assert announced[-1] == account["id"]
        assert [d["changed_pii"] for k, d in events if k.endswith("updated.v1")] == (
            [["email"], ["email"]] if hubspot == "1" else [["email"]]
        )


async def test_a_hubspot_contact_takes_the_email_another_gave_up_in_the_same_delivery(
    intake: Intake,
) -> None:
    await add_source(intake, name="hs", provider="hubspot", secret=HUBSPOT_SECRET)
    await post_hubspot(intake, [contact_event(1, 100, "email", "old@acme.com")])

    delivery = await post_hubspot(
        intake,
        [
            contact_event(2, 100, "email", "new@acme.com"),
            contact_event(3, 200, "email", "old@acme.com"),
        ],
    )

    assert delivery == {"accepted": 2, "duplicates": 0, "failed": []}
    assert await emails_by_external_id(intake) == {"100": "new@acme.com", "200": "old@acme.com"}

"""Scoring models: a draft until one marketing and one sales manager sign it off."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources

from shared.events.payloads import LeadCaptured
from tests.api.conftest import Qualification


def document(version: str) -> str:
    text = (resources.files("services.qualification") / "default_model.yaml").read_text()
    return text.replace('version: "default-1"', f'version: "{version}"')


async def test_a_model_is_active_only_after_a_marketing_and_a_sales_manager_approve(
    qualification: Qualification,
) -> None:
    q = qualification
    created = await q.client.post(
        "/v1/scoring-models",
        content=document("2026-q4"),
        headers={**q.auth("marketing"), "content-type": "application/yaml"},
    )
    first = await q.client.post(
        "/v1/scoring-models/2026-q4/approve", headers=q.auth("manager", team="marketing")
    )
    again = await q.client.post(
        "/v1/scoring-models/2026-q4/approve", headers=q.auth("manager", team="marketing")
    )
    second = await q.client.post(
        "/v1/scoring-models/2026-q4/approve", headers=q.auth("manager", team="sales")
    )

    assert created.status_code == 201
    assert first.json()["status"] == "draft"
    assert again.status_code == 409
    assert second.json()["status"] == "active"
    assert set(second.json()["approved_by"]) == {"marketing", "sales"}
    listed = (await q.client.get("/v1/scoring-models", headers=q.auth("viewer"))).json()
    assert [m["status"] for m in listed if m["version"] == "2026-q4"] == ["active"]


async def test_a_manager_without_a_team_cannot_sign_off(qualification: Qualification) -> None:
    q = qualification
    await q.client.post(
        "/v1/scoring-models", content=document("v-team"), headers=q.auth("marketing")
    )
    response = await q.client.post("/v1/scoring-models/v-team/approve", headers=q.auth("manager"))
    assert response.status_code == 403


async def test_an_invalid_model_is_a_422_naming_the_field(qualification: Qualification) -> None:
    q = qualification
    broken = document("v-bad").replace("mql_threshold: 50", "mql_treshold: 50")
    response = await q.client.post("/v1/scoring-models", content=broken, headers=q.auth("sales"))
    assert response.status_code == 422
    assert any("mql_treshold" in e["field"] for e in response.json()["errors"])


async def test_activating_a_model_rescores_every_lead_with_progress(
    qualification: Qualification,
) -> None:
    q = qualification
    leads = [uuid.uuid4() for _ in range(3)]
    for lead in leads:
        await q.publish(
            LeadCaptured(
                lead_id=lead, source="marketing", email_kind="freemail", email_domain="gmail.com"
            ),
            source="intake",
        )
    await wait_until(q, lambda: all_in(q, leads, "lead"))
    generous = document("v-generous").replace("mql_threshold: 50", "mql_threshold: -50")
    generous = generous.replace("min_fit: 10", "min_fit: -50")
    await q.client.post("/v1/scoring-models", content=generous, headers=q.auth("marketing"))
    for team in ("marketing", "sales"):
        await q.client.post(
            "/v1/scoring-models/v-generous/approve", headers=q.auth("manager", team=team)
        )

    await wait_until(q, lambda: all_in(q, leads, "mql"))
    listed = (await q.client.get("/v1/scoring-models", headers=q.auth("viewer"))).json()
    job = next(m["rescoring"] for m in listed if m["version"] == "v-generous")
    assert job == {"done": 3, "total": 3, "finished": True}


async def all_in(q: Qualification, leads: list[uuid.UUID], stage: str) -> bool:
    for lead in leads:
        response = await q.client.get(f"/v1/leads/{lead}/qualification", headers=q.auth("viewer"))
        if response.status_code != 200 or response.json()["stage"] != stage:
            return False
    return True


async def wait_until(q: Qualification, condition: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(200):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never met")


async def test_a_simulation_reports_mqls_per_week_under_both_models(
    qualification: Qualification,
) -> None:
    q = qualification
    leads = [uuid.uuid4() for _ in range(2)]
    profiles = (
        ("business", {"company_size": 400, "seniority": "vp"}),
        ("freemail", {"company_size": 5}),
    )
    for lead, (kind, profile) in zip(leads, profiles, strict=True):
        await q.publish(
            LeadCaptured(
                lead_id=lead,
                source="marketing",
                email_kind=kind,
                email_domain="x.com",
                profile=profile,
            ),
            source="intake",
        )
    await wait_until(q, lambda: all_in(q, leads, "lead"))
    strict = document("v-strict").replace("mql_threshold: 50", "mql_threshold: 500")
    await q.client.post("/v1/scoring-models", content=strict, headers=q.auth("marketing"))
    lenient = document("v-lenient").replace("mql_threshold: 50", "mql_threshold: 0")
    await q.client.post("/v1/scoring-models", content=lenient, headers=q.auth("marketing"))

    none = await q.client.post("/v1/scoring-models/v-strict/simulate", headers=q.auth("sales"))
    some = await q.client.post("/v1/scoring-models/v-lenient/simulate", headers=q.auth("sales"))

    assert none.json()["totals"]["candidate"]["mql"] == 0
    assert some.json()["totals"]["candidate"]["mql"] == 1  # the business-mail lead only
    assert some.json()["active"] == "default-1"
    assert some.json()["leads"] == 2
    assert len(some.json()["weeks"]) == 1

"""Scoring models: a draft until one marketing and one sales manager sign it off."""

from __future__ import annotations

from importlib import resources

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

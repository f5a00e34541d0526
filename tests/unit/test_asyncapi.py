"""The published event catalog (AsyncAPI) is generated from the models and kept current."""

from __future__ import annotations

import json

from shared.events.asyncapi import asyncapi_document
from shared.events.catalog import CATALOG
from shared.http import VERSION
from tests.infra import ROOT


def test_every_event_type_is_a_message_on_its_topic_with_its_payload_schema() -> None:
    document = asyncapi_document(CATALOG, version=VERSION)
    messages = document["components"]["messages"]
    assert {m["name"] for m in messages.values()} == {t.name for t in CATALOG}
    captured = document["components"]["schemas"]["lead_captured_v1"]
    assert {"lead_id", "source"} <= set(captured["required"])
    assert "email" not in captured["properties"]  # no direct identifiers on the bus
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == {t.topic for t in CATALOG}


def test_each_producer_sends_only_its_own_events() -> None:
    operations = asyncapi_document(CATALOG, version=VERSION)["operations"]
    assert set(operations) >= {
        "intake_sends_handoff_lead_captured",
        "qualification_sends_handoff_lead_stage",
        "routing_sends_handoff_sla",
    }
    assert all(op["action"] == "send" for op in operations.values())


def test_the_committed_catalog_matches_the_models() -> None:
    committed = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    assert committed == asyncapi_document(CATALOG, version=VERSION), (
        "docs/asyncapi.json is stale: run `handoff asyncapi --output docs/asyncapi.json`"
    )

"""Headers relayed from the outbox as stored JSON read back exactly as plain header pairs."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.bus.local import LocalBus
from shared.bus.port import OutgoingMessage, StoredHeaders
from shared.events.codec import header_pairs, headers_json, headers_json_list
from shared.outbox_sql import outgoing_headers
from tests.support import collect

PAIRS = [("ce_id", "42"), ("ce_subject", "lead-1"), ("ce_source", "/handoff/qualification")]


def test_stored_headers_are_the_pairs_they_were_stored_as() -> None:
    headers = StoredHeaders(orjson.dumps(PAIRS).decode())

    assert list(headers) == [(k, v.encode()) for k, v in PAIRS]
    assert len(headers) == 3 and headers[1] == ("ce_subject", b"lead-1")


async def test_the_local_bus_reads_back_stored_headers_as_it_reads_plain_ones(
    tmp_path: Path,
) -> None:
    accented = [*PAIRS, ("note", "café ☕")]  # not ASCII: stored the bus's own way
    bus = LocalBus(tmp_path / "events.db", partitions=1)
    await bus.start()
    try:
        messages = [
            OutgoingMessage("t", "k", b"{}", StoredHeaders(orjson.dumps(pairs).decode()))
            for pairs in (PAIRS, accented)
        ]
        plain = [OutgoingMessage("t", "k", b"{}", list(m.headers)) for m in messages]
        await bus.publish([*messages, *plain])
        subscription = bus.subscribe(group="g", topics=["t"])
        await subscription.start()
        records = await collect(subscription, 4, timeout=5)
        await subscription.close()
    finally:
        await bus.close()

    expected = [[(k, v.encode()) for k, v in pairs] for pairs in (PAIRS, accented)]
    assert [list(r.headers) for r in records] == expected * 2


PLAIN: dict[str, Any] = {
    "event_id": "0190f5c2-8d3e-7a41-9b2c-000000000001",
    "source": "/handoff/intake",
    "event_type": "handoff.lead.captured.v1",
    "subject": "0190f5c2-8d3e-7a41-9b2c-5e6f7a8b9c0d",
    "time": "2026-11-23T07:30:01.123456+00:00",
    "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
}


def stored(values: dict[str, Any], sequence: int = 42) -> str:
    """The stored headers, written out from their definition."""
    pairs = [
        ["ce_specversion", "1.0"],
        ["ce_id", values["event_id"]],
        ["ce_source", values["source"]],
        ["ce_type", values["event_type"]],
        ["ce_subject", values["subject"]],
        ["ce_time", values["time"]],
        ["ce_partitionkey", values["subject"]],
        ["ce_sequence", f"{sequence:012d}"],
        ["content-type", "application/json"],
    ]
    if values["traceparent"]:
        pairs.append(["ce_traceparent", values["traceparent"]])
    return orjson.dumps(pairs).decode()


@pytest.mark.parametrize("field", sorted(PLAIN))
@pytest.mark.parametrize(
    "odd", ['say "hi"', "back\\slash", "café ☕", "tab\there", "del\x7f", "nul\x00"]
)
def test_the_outbox_headers_text_is_json_whatever_a_field_holds(field: str, odd: str) -> None:
    values: dict[str, Any] = {**PLAIN, field: odd}

    assert headers_json(**values, sequence=42) == stored(values)


@pytest.mark.parametrize("traceparent", [PLAIN["traceparent"], None, ""])
def test_the_outbox_headers_text_is_the_json_of_the_header_pairs(traceparent: str | None) -> None:
    values: dict[str, Any] = {**PLAIN, "traceparent": traceparent}
    time = datetime.fromisoformat(PLAIN["time"])
    pairs = header_pairs(**{**values, "time": time}, sequence=42)  # (the wire format)

    assert headers_json(**values, sequence=42) == orjson.dumps(pairs).decode() == stored(values)


@pytest.mark.parametrize("field", sorted(PLAIN))
@pytest.mark.parametrize("odd", ['say "hi"', "back\\slash", "café ☕", "tab\there", "nul\x00"])
def test_a_transactions_headers_texts_are_each_events_own(field: str, odd: str) -> None:
    """The texts made together for a transaction's events are those made one by one,
    whichever field of one event holds what JSON must escape."""
    odd_one: dict[str, Any] = {**PLAIN, field: odd}
    plain_other: dict[str, Any] = {**PLAIN, "subject": "another", "traceparent": None}
    if field in ("source", "time"):  # shared by the transaction's events
        plain_other = {**plain_other, field: odd}
    events = [
        (v["event_id"], v["event_type"], v["subject"], n, v["traceparent"])
        for n, v in ((7, odd_one), (8, plain_other))
    ]

    texts = headers_json_list(odd_one["source"], odd_one["time"], events)

    assert texts == [stored(odd_one, 7), stored(plain_other, 8)]


def test_a_row_goes_out_with_its_id_where_its_headers_hold_the_placeholder() -> None:
    """PostgreSQL's stored headers carry sequence 0, which the relay replaces by the row's
    id; headers numbered already (SQLite's, and rows stored before ids were the sequence)
    go out as they were."""
    values = {
        "event_id": "0192f3a4-5b6c-7d8e-9f01-23456789abcd",
        "source": "/handoff/intake",
        "event_type": "handoff.lead.captured.v1",
        "subject": "lead-1",
        "time": "2026-11-24T08:00:00+00:00",
        "traceparent": None,
    }
    placeholder = headers_json(**values, sequence=0)
    assert outgoing_headers(placeholder, 42) == headers_json(**values, sequence=42)
    assert outgoing_headers(placeholder, 10**13) == headers_json(**values, sequence=10**13)
    numbered = headers_json(**values, sequence=7)
    assert outgoing_headers(numbered, 42) == numbered

"""Headers relayed from the outbox as stored JSON read back exactly as plain header pairs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from shared.bus.local import LocalBus
from shared.bus.port import OutgoingMessage, StoredHeaders
from shared.events.codec import header_pairs, headers_json
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


@pytest.mark.parametrize(
    ("subject", "traceparent"),
    [
        ("0190f5c2-8d3e-7a41-9b2c-5e6f7a8b9c0d", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"),
        ("lead-1", None),
        ('a "quoted" subject', None),  # escaped by JSON
        ("back\\slash", None),
        ("café ☕", "00-" + "1" * 32 + "-" + "2" * 16 + "-00"),  # not ASCII
        ("tab\there", None),  # a control character
    ],
)
def test_the_outbox_headers_text_is_the_json_of_the_header_pairs(
    subject: str, traceparent: str | None
) -> None:
    time = datetime(2026, 11, 23, 7, 30, 1, 123456, tzinfo=UTC)
    given = dict(
        event_id="0190f5c2-8d3e-7a41-9b2c-000000000001",
        source="/handoff/intake",
        event_type="handoff.lead.captured.v1",
        subject=subject,
        sequence=42,
        traceparent=traceparent,
    )

    text = headers_json(**given, time=time.isoformat())  # type: ignore[arg-type]

    assert text == orjson.dumps(header_pairs(**given, time=time)).decode()  # type: ignore[arg-type]
    assert dict(orjson.loads(text))["ce_subject"] == subject

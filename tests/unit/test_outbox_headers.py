"""The headers the relay makes from an outbox row's columns are the event's `ce_*` headers
of the wire format, byte for byte, and read back as the event they were made from."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from shared.bus.local import LocalBus
from shared.bus.port import OutgoingMessage
from shared.events.codec import OutboxHeaders, from_binary, header_pairs
from tests.support import collect

PLAIN: dict[str, Any] = {
    "event_id": "0190f5c2-8d3e-7a41-9b2c-000000000001",
    "event_type": "handoff.lead.captured.v1",
    "subject": "0190f5c2-8d3e-7a41-9b2c-5e6f7a8b9c0d",
    "time": "2026-11-23T07:30:01.123456+00:00",
    "sequence": 42,
    "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
}
SOURCE = "/handoff/intake"


def wire(values: dict[str, Any], source: str = SOURCE) -> list[tuple[str, bytes]]:
    """The event's headers as the Kafka binding writes them (`header_pairs`), in UTF-8."""
    time = datetime.fromisoformat(PLAIN["time"])
    pairs = header_pairs(**{**values, "time": time}, source=source)
    return [  # (the time as the row holds it: `header_pairs` takes a datetime)
        (name, (values["time"] if name == "ce_time" else value).encode()) for name, value in pairs
    ]


@pytest.mark.parametrize("traceparent", [PLAIN["traceparent"], None, ""])
def test_a_rows_headers_are_its_events_headers_on_the_wire(traceparent: str | None) -> None:
    values = {**PLAIN, "traceparent": traceparent}

    assert OutboxHeaders(SOURCE).pairs(**values) == wire(values)


@pytest.mark.parametrize("field", ["event_id", "event_type", "subject", "traceparent", "time"])
@pytest.mark.parametrize("odd", ['say "hi"', "back\\slash", "café ☕", "tab\there", "nul\x00"])
def test_a_rows_headers_carry_whatever_a_column_holds(field: str, odd: str) -> None:
    values = {**PLAIN, field: odd}

    assert OutboxHeaders("/handoff/café").pairs(**values) == wire(values, "/handoff/café")


def test_events_sharing_a_type_and_time_each_get_their_own_headers() -> None:
    """The pairs made once for a type or a time are shared; everything else is the event's."""
    headers = OutboxHeaders(SOURCE)
    first = {**PLAIN, "sequence": 7}
    second = {**PLAIN, "event_id": PLAIN["event_id"][:-1] + "2", "subject": "lead-2"}
    other_type = {**PLAIN, "event_type": "handoff.lead.updated.v1", "sequence": 10**13}

    made = [headers.pairs(**v) for v in (first, second, other_type, first)]

    assert made == [wire(v) for v in (first, second, other_type, first)]


def test_headers_stay_right_past_the_remembered_types_and_times() -> None:
    headers = OutboxHeaders(SOURCE)
    for n in range(2_100):  # (1,024 of each are remembered, then forgotten)
        values = {
            **PLAIN,
            "event_type": f"handoff.t{n % 1_500}.v1",
            "time": f"2026-11-23T07:30:01.{n + 1:06d}+00:00",
            "sequence": n + 1,
        }
        assert headers.pairs(**values) == wire(values)


def test_a_rows_headers_read_back_as_the_event_they_were_made_from() -> None:
    pairs = OutboxHeaders(SOURCE).pairs(**PLAIN)

    envelope = from_binary(pairs, b"{}")

    assert (envelope.id, envelope.source, envelope.type, envelope.subject) == (
        PLAIN["event_id"],
        SOURCE,
        PLAIN["event_type"],
        PLAIN["subject"],
    )
    assert envelope.time == datetime.fromisoformat(PLAIN["time"])
    assert (envelope.partitionkey, envelope.sequence, envelope.traceparent) == (
        PLAIN["subject"],
        42,
        PLAIN["traceparent"],
    )


async def test_the_local_bus_gives_back_the_headers_it_was_given(tmp_path: Path) -> None:
    made = OutboxHeaders(SOURCE).pairs(**PLAIN)
    accented = [*made, ("note", "café ☕".encode())]  # not ASCII
    bus = LocalBus(tmp_path / "events.db", partitions=1)
    await bus.start()
    try:
        await bus.publish([OutgoingMessage("t", "k", b"{}", h) for h in (made, accented)])
        subscription = bus.subscribe(group="g", topics=["t"])
        await subscription.start()
        records = await collect(subscription, 2, timeout=5)
        await subscription.close()
    finally:
        await bus.close()

    assert [list(r.headers) for r in records] == [made, accented]

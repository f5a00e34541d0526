"""Headers relayed from the outbox as stored JSON read back exactly as plain header pairs."""

from __future__ import annotations

from pathlib import Path

import orjson

from shared.bus.local import LocalBus
from shared.bus.port import OutgoingMessage, StoredHeaders
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

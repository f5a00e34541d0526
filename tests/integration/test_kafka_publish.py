"""KafkaBus.publish on the real broker when publishes queue behind one another."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from shared.bus.kafka import KafkaBus
from shared.bus.port import OutgoingMessage
from tests.conftest import unique
from tests.support import collect

pytestmark = pytest.mark.integration

PUBLISHERS = 64
PUBLISHES = 4
BATCH = 100


async def test_publishes_queued_on_one_partition_wait_their_turn_rather_than_fail(
    kafka_servers: str,
) -> None:
    """64 publishers share one partition, so each publish waits for the batches queued
    before it: a few dozen turns of a few milliseconds, far from the 2 s request timeout.
    Every publish succeeds and each publisher's records keep their order. (aiokafka's own
    wait, left alone, gave up here after about a second: it deducts all the time waited
    so far on every turn.)"""
    bus = KafkaBus(
        kafka_servers, client_id=unique("test-queued"), partitions=1, request_timeout_ms=2000
    )
    topic = unique("t.queued")
    await bus.start()
    try:
        await bus.ensure_topics([topic])
        value = b"v" * 300

        async def publisher(p: int) -> None:
            for n in range(PUBLISHES):
                batch = [
                    OutgoingMessage(
                        topic=topic,
                        key=f"publisher-{p}",
                        value=value,
                        headers=(("n", str(n * BATCH + i).encode()),),
                    )
                    for i in range(BATCH)
                ]
                await bus.publish(batch)

        await asyncio.gather(*(publisher(p) for p in range(PUBLISHERS)))

        subscription = bus.subscribe(group=unique("g"), topics=[topic])
        await subscription.start()
        records = await collect(subscription, PUBLISHERS * PUBLISHES * BATCH)
        await subscription.close()
    finally:
        await bus.delete_topics([topic])
        await bus.close()

    seen: dict[str, list[int]] = defaultdict(list)
    for record in records:
        seen[record.key or ""].append(int(record.header("n") or -1))
    assert len(records) == PUBLISHERS * PUBLISHES * BATCH
    assert {key: numbers == list(range(PUBLISHES * BATCH)) for key, numbers in seen.items()} == {
        f"publisher-{p}": True for p in range(PUBLISHERS)
    }

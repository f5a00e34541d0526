"""KafkaBus.publish when the producer will not take a batch yet: it offers the batch again
until the request timeout has passed, then fails naming Kafka. (On the real broker:
tests/integration/test_kafka_publish.py.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder

from shared.bus.kafka import KafkaBus
from shared.bus.port import BusError, OutgoingMessage


class BusyProducer:
    """Refuses each batch `refusals` times (as aiokafka does when its wait for the queued
    batches runs out), after `turn_s` of waiting each time; then takes it."""

    def __init__(self, refusals: int, turn_s: float = 0.01) -> None:
        self.refusals = refusals
        self.turn_s = turn_s
        self.offers: list[tuple[str, int, int]] = []  # topic, partition, records

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(64 * 1024, 0)

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        self.offers.append((topic, partition, batch.record_count()))
        await asyncio.sleep(self.turn_s)
        if len(self.offers) <= self.refusals:
            raise KafkaTimeoutError()
        stored: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        stored.set_result(None)
        return stored


def bus_on(producer: BusyProducer, request_timeout_ms: int) -> KafkaBus:
    bus = KafkaBus("127.0.0.1:1", request_timeout_ms=request_timeout_ms)
    bus._producer = producer  # type: ignore[assignment]
    return bus


MESSAGES = [OutgoingMessage(topic="t", key=f"k{i}", value=b"v") for i in range(3)]


async def test_a_batch_refused_within_the_timeout_is_offered_again_and_published() -> None:
    producer = BusyProducer(refusals=5)
    await bus_on(producer, request_timeout_ms=5_000).publish(MESSAGES)
    assert producer.offers == [("t", 0, 3)] * 6


async def test_a_batch_refused_until_the_timeout_fails_the_publish() -> None:
    producer = BusyProducer(refusals=10_000)
    started = time.monotonic()
    with pytest.raises(BusError, match="publish to Kafka failed"):
        await bus_on(producer, request_timeout_ms=200).publish(MESSAGES)
    assert 0.2 <= time.monotonic() - started < 2.0
    assert 10 <= len(producer.offers) < 10_000

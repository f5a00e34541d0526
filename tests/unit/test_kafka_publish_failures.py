"""KafkaBus.publish when the producer fails it.

A batch the producer will not take yet is offered again until the request timeout has
passed. A producer whose publish failed is replaced, without letting messages overtake one
another: the new producer sends nothing before the old one's batches are settled, and a
sequence begun on the old producer fails rather than going on on the new one. (On a real
broker: tests/integration/test_kafka_publish.py, tests/integration/test_broker_restart.py.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder
from prometheus_client import REGISTRY

from shared.bus.kafka import KafkaBus
from shared.bus.port import BusError, OutgoingMessage
from tests.conftest import unique


class StubProducer:
    """Takes every batch but the next `refusals` ones (refused after 10 ms, as aiokafka
    does when its wait for the batches queued before runs out: `KafkaTimeoutError`); each
    delivery stays undecided until the test settles it, unless `auto` (stored at once)."""

    def __init__(self, name: str, timeline: list[str], *, auto: bool = False) -> None:
        self.name, self.timeline, self.auto = name, timeline, auto
        self.deliveries: list[asyncio.Future[Any]] = []
        self.offers: list[tuple[str, int, int]] = []  # topic, partition, records
        self.stopped = False
        self.refusals = 0

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(64 * 1024, 0)

    async def send_batch(
        self, batch: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Any]:
        self.offers.append((topic, partition, batch.record_count()))
        if self.refusals:
            self.refusals -= 1
            await asyncio.sleep(0.01)
            raise KafkaTimeoutError()
        self.timeline.append(f"{self.name} sends")
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.auto:
            delivery.set_result(None)
        self.deliveries.append(delivery)
        return delivery

    def settle(self, n: int, error: Exception | None = None) -> None:
        self.timeline.append(f"{self.name} settles #{n}" + (" (failed)" if error else ""))
        if error is None:
            self.deliveries[n].set_result(None)
        else:
            self.deliveries[n].set_exception(error)

    async def flush(self) -> None:
        if self.deliveries:
            await asyncio.wait(self.deliveries)

    async def stop(self) -> None:
        self.stopped = True


class StubbedBus(KafkaBus):
    """A KafkaBus whose producers are `StubProducer`s, made in turn: p1, p2, ..."""

    def __init__(self, request_timeout_ms: int = 5_000) -> None:
        super().__init__(
            "127.0.0.1:1", client_id=unique("stub"), request_timeout_ms=request_timeout_ms
        )
        self.timeline: list[str] = []
        self.made: list[StubProducer] = []

    async def _new_producer(self) -> Any:
        producer = StubProducer(f"p{len(self.made) + 1}", self.timeline, auto=bool(self.made))
        self.made.append(producer)
        return producer


MESSAGES = [OutgoingMessage(topic="t", key="lead-1", value=b"v")]
THREE = [OutgoingMessage(topic="t", key=f"k{i}", value=b"v") for i in range(3)]


async def failed(stored: Awaitable[None]) -> None:
    with pytest.raises(BusError, match="publish to Kafka failed"):
        await stored


def replaced(bus: KafkaBus) -> float:
    value = REGISTRY.get_sample_value(
        "handoff_kafka_producers_replaced_total", {"client_id": bus.client_id}
    )
    return value or 0.0


async def test_a_batch_refused_within_the_timeout_is_offered_again_and_published() -> None:
    bus = StubbedBus()
    await bus.start()
    bus.made[0].auto, bus.made[0].refusals = True, 5
    await bus.publish(THREE)
    assert bus.made[0].offers == [("t", 0, 3)] * 6


async def test_a_batch_refused_until_the_timeout_fails_the_publish() -> None:
    bus = StubbedBus(request_timeout_ms=200)
    await bus.start()
    bus.made[0].refusals = 10_000
    started = time.monotonic()
    with pytest.raises(BusError, match="publish to Kafka failed"):
        await bus.publish(THREE)
    assert 0.2 <= time.monotonic() - started < 2.0
    assert 10 <= len(bus.made[0].offers) < 10_000


async def test_after_a_failed_delivery_the_next_publish_goes_out_on_a_new_producer() -> None:
    bus = StubbedBus()
    await bus.start()
    stored = await bus.enqueue(MESSAGES)
    bus.made[0].settle(0, KafkaConnectionError("broker away"))
    await failed(stored)

    await bus.publish(MESSAGES)

    assert [p.name for p in bus.made] == ["p1", "p2"]
    assert bus.made[0].stopped and not bus.made[1].stopped
    assert bus.timeline == ["p1 sends", "p1 settles #0 (failed)", "p2 sends"]
    assert replaced(bus) == 1


async def test_the_new_producer_sends_only_once_the_old_ones_batches_are_settled() -> None:
    bus = StubbedBus()
    await bus.start()
    first = await bus.enqueue(MESSAGES)  # still undecided when the second one fails
    second = await bus.enqueue(MESSAGES)
    bus.made[0].settle(1, KafkaConnectionError("broker away"))
    await failed(second)

    publishing = asyncio.create_task(bus.publish(MESSAGES))
    await asyncio.sleep(0.05)
    assert len(bus.made) == 1  # waiting for the first batch's answer
    bus.made[0].settle(0)
    await publishing
    await first

    assert bus.timeline == [
        "p1 sends",
        "p1 sends",
        "p1 settles #1 (failed)",
        "p1 settles #0",
        "p2 sends",
    ]


async def test_a_sequence_begun_on_a_failed_producer_fails_rather_than_moving_on() -> None:
    bus = StubbedBus()
    await bus.start()
    begun = await bus.enqueue(MESSAGES)  # the relay's first batch of a transaction
    other = await bus.enqueue(MESSAGES)  # someone else's publish, which fails
    bus.made[0].settle(1, KafkaConnectionError("broker away"))
    await failed(other)

    with pytest.raises(BusError, match="send it all again"):
        await bus.enqueue(MESSAGES, after=begun)
    assert len(bus.made) == 1  # not replaced for it: nothing of the sequence moved

    bus.made[0].settle(0)
    await begun
    await bus.publish(MESSAGES)  # a fresh start goes out on the new producer
    with pytest.raises(BusError, match="the producer was replaced"):
        await bus.enqueue(MESSAGES, after=begun)
    assert bus.timeline[-1] == "p2 sends"


async def test_an_old_producer_that_never_settles_fails_the_publish_and_is_kept() -> None:
    bus = StubbedBus(request_timeout_ms=200)
    await bus.start()
    await bus.enqueue(MESSAGES)  # never answered
    other = await bus.enqueue(MESSAGES)
    bus.made[0].settle(1, KafkaConnectionError("broker away"))
    await failed(other)

    with pytest.raises(BusError, match="has not answered"):
        await bus.publish(MESSAGES)
    assert len(bus.made) == 1 and not bus.made[0].stopped
    assert bus.producer is bus.made[0]  # type: ignore[comparison-overlap]


async def test_a_batch_the_producer_would_not_take_leaves_the_producer_in_place() -> None:
    bus = StubbedBus(request_timeout_ms=100)
    await bus.start()
    bus.made[0].refusals = 10_000
    with pytest.raises(BusError, match="KafkaTimeoutError"):
        await bus.publish(MESSAGES)  # nothing taken: no gap in its numbering

    bus.made[0].refusals = 0
    stored = await bus.enqueue(MESSAGES)
    bus.made[0].settle(0)
    await stored
    assert len(bus.made) == 1

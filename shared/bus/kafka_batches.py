"""Record batches handed to aiokafka's producer: one per partition, offered until the
broker takes it, and what completes once the broker has stored them all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.producer.message_accumulator import BatchBuilder

from shared.bus.port import BusError, OutgoingMessage


async def send_batch(
    producer: AIOKafkaProducer, batch: BatchBuilder, topic: str, partition: int, timeout: float
) -> asyncio.Future[object]:
    """Queue `batch` for its partition; what completes once the broker stored it.

    The producer holds one batch per partition until it is sent, so a batch waits
    while the ones queued before it go out, for at most `timeout` (s). aiokafka's
    `send_batch` counts that wait wrongly: on every turn it deducts all the time waited
    so far, so behind a queue of batches (many publishers, or a broker slow to answer
    just after it started) it gives up after a fraction of the timeout. It raises
    before taking the batch, so the batch is offered again until `timeout` has really
    passed. A caller's own batches keep their order (its next one is offered only once
    this one is taken); another caller's may go first, as with any concurrent sends.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            delivery: asyncio.Future[object] = await producer.send_batch(
                batch, topic, partition=partition
            )
        except KafkaTimeoutError:
            if time.monotonic() >= deadline:
                raise
            continue
        return delivery


class Stored:
    """What `KafkaBus.enqueue` returns: completes once the broker stored every batch.
    `on_failure` is called when one could not be stored (the producer is replaced)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        deliveries: list[asyncio.Future[object]],
        on_failure: Callable[[], None],
    ) -> None:
        self.producer, self.deliveries, self.on_failure = producer, deliveries, on_failure

    def __await__(self) -> Generator[Any, None, None]:
        return self._wait().__await__()

    async def _wait(self) -> None:
        try:
            await asyncio.gather(*self.deliveries)
        except KafkaError as exc:
            self.on_failure()
            raise BusError(f"publish to Kafka failed: {exc}") from exc


async def done() -> None:
    """What `enqueue` returns for nothing to send."""
    return None


def append(batch: BatchBuilder, key: bytes, message: OutgoingMessage) -> bool:
    """Add `message` to `batch`; False when the batch is full."""
    headers = header_list(message.headers)
    added = batch.append(key=key, value=message.value, timestamp=None, headers=headers)
    return added is not None


def header_list(headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """`headers` as the list aiokafka's record builder takes (and nothing else)."""
    if isinstance(headers, list):  # (the relay's: made for this message, no copy)
        return headers
    return list(headers)

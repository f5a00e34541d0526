"""One consumer-group member on Kafka: polls, commits offsets, reports its lag, and lets
the in-flight batch finish and commit before its partitions move."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, RebalanceInProgressError

from shared.bus.port import Record, RevokeHook, Subscription

if TYPE_CHECKING:
    from shared.bus.kafka import KafkaBus

log = structlog.get_logger(__name__)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_revoke: RevokeHook | None, group: str) -> None:
        self.on_revoke = on_revoke
        self.group = group

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked and self.on_revoke is not None:
            await self.on_revoke()  # finish and commit the in-flight batch first
        log.info("partitions revoked", group=self.group, partitions=len(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned", group=self.group, partitions=len(assigned))


class KafkaSubscription(Subscription):
    """One consumer-group member on Kafka."""

    def __init__(
        self, bus: KafkaBus, *, group: str, topics: tuple[str, ...], on_revoke: RevokeHook | None
    ) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bus.bootstrap_servers,
            client_id=f"{bus.client_id}-{group}",
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=bus.session_timeout_ms,
            heartbeat_interval_ms=max(500, bus.session_timeout_ms // 4),
            fetch_max_wait_ms=100,
        )
        self._listener = _Listener(on_revoke, group)

    async def start(self) -> None:
        await self.bus.ensure_topics(self.topics)
        self._consumer.subscribe(list(self.topics), listener=self._listener)
        await self._consumer.start()

    async def poll(self, *, max_records: int, timeout: float) -> list[Record]:
        batches = await self._consumer.getmany(
            timeout_ms=int(timeout * 1000), max_records=max_records
        )
        return [
            Record(
                tp.topic,
                tp.partition,
                m.offset,
                m.key.decode("utf-8", "replace") if m.key else None,
                m.value or b"",
                tuple(m.headers),
                m.timestamp,
            )
            for tp, messages in batches.items()
            for m in messages
        ]

    async def commit(self, records: Sequence[Record]) -> None:
        # Each partition's next offset, keyed by plain tuples (a TopicPartition per record
        # cost more than the rest of the loop).
        ends: dict[tuple[str, int], int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            if r.offset >= ends.get(tp, 0):
                ends[tp] = r.offset + 1
        if not ends:
            return
        offsets = {TopicPartition(topic, part): end for (topic, part), end in ends.items()}
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            # The partitions moved: their new owner re-reads these records and its inbox
            # drops what we already applied. Nothing is lost.
            log.warning("offset commit refused after a rebalance", group=self.group, error=str(exc))

    async def lag(self) -> dict[tuple[str, int], int]:
        lags: dict[tuple[str, int], int] = {}
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            committed = await self._consumer.committed(tp)
            if highwater is not None:
                lags[(tp.topic, tp.partition)] = max(0, highwater - (committed or 0))
        return lags

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    async def close(self) -> None:
        await self._consumer.stop()

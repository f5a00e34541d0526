"""LocalSubscription: a member of a consumer group of the embedded event log (`LocalBus`)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.bus.port import Record, RevokeHook, Subscription

if TYPE_CHECKING:
    from shared.bus.local import LocalBus, TopicPartition


class LocalSubscription(Subscription):
    """A member of a LocalBus consumer group."""

    def __init__(
        self, bus: LocalBus, *, group: str, topics: tuple[str, ...], on_revoke: RevokeHook | None
    ) -> None:
        self.bus = bus
        self.group = group
        self.topics = topics
        self._on_revoke = on_revoke
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._joined = False
        self._assigned = asyncio.Event()
        self._turn = 0  # which partition with records a fetch serves first

    async def start(self) -> None:
        await self.bus._join(self)
        self._joined = True

    async def _revoke(self) -> None:
        if self._on_revoke is not None and self._positions:
            await self._on_revoke()

    def _assign(self, positions: dict[TopicPartition, int]) -> None:
        self._positions = dict(positions)
        self._committed = dict(positions)

    def assignment(self) -> set[TopicPartition]:
        return set(self._positions)

    async def poll(self, *, max_records: int, timeout: float) -> list[Record]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            positions = dict(self._positions)
            records, self._turn = await self.bus._fetch(positions, max_records, self._turn)
            if records:
                for r in records:
                    tp = (r.topic, r.partition)
                    if tp in self._positions:
                        self._positions[tp] = max(self._positions[tp], r.offset + 1)
                return records
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return []
            if positions:
                await self.bus._wait_for_append(positions, remaining)
            else:  # nothing assigned to us (more members than partitions): idle
                await asyncio.sleep(min(remaining, 0.5))

    async def commit(self, records: Sequence[Record]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = (r.topic, r.partition)
            if tp in self._positions:  # a partition moved away: its new owner re-reads it
                offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        if offsets:
            await self.bus._commit(self.group, offsets)
            self._committed.update(offsets)

    async def lag(self) -> dict[TopicPartition, int]:
        return {
            tp: max(0, self.bus.end_offset(tp) - self._committed.get(tp, 0))
            for tp in self._positions
        }

    async def close(self) -> None:
        if self._joined:
            self._joined = False
            self._positions = {}
            await self.bus._leave(self)

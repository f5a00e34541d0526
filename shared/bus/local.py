"""LocalBus: a durable, Kafka-shaped event log in one SQLite file, for the embedded mode.

Topics have partitions, a key always lands in the same partition, offsets are contiguous
per partition, and consumer groups keep committed offsets in the file. A crash loses
nothing: a record is acknowledged only after its insert commits, and a group resumes from
its committed offsets. Consumers sleep on a condition that publishes notify.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import sqlite3
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from shared.bus.local_headers import dump_headers, load_headers
from shared.bus.local_subscription import LocalSubscription
from shared.bus.port import Bus, BusError, OutgoingMessage, Record, RevokeHook
from shared.sqlite_checkpoint import WalCheckpointer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY, partitions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, "offset" INTEGER NOT NULL,
    key TEXT, value BLOB NOT NULL, headers BLOB NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (topic, partition, "offset")) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_offsets (
    grp TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL, PRIMARY KEY (grp, topic, partition)) WITHOUT ROWID;
"""

TopicPartition = tuple[str, int]


def partition_for(key: str, partitions: int) -> int:
    """Stable key -> partition mapping (so a lead's events stay in order)."""
    return zlib.crc32(key.encode()) % partitions


class LocalBus(Bus):
    """The embedded event log; one process owns the file (a lock file enforces it).

    Args:
        path: the SQLite file of the log.
        partitions: partitions of topics created on first use.
    """

    def __init__(self, path: Path, *, partitions: int = 6) -> None:
        self.path = path
        self.default_partitions = partitions
        self._conn: sqlite3.Connection | None = None
        self._lock_file: IO[str] | None = None
        self._partitions: dict[str, int] = {}
        self._end: dict[TopicPartition, int] = defaultdict(int)
        self._write_lock = asyncio.Lock()
        self._appended = asyncio.Condition()
        self._groups: dict[str, list[LocalSubscription]] = defaultdict(list)
        self._group_lock: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def check_free(self) -> None:
        """Raise `BusError` now if another process has this log open (as `start` would,
        later): a second `handoff dev` on one data directory says so before anything else."""
        self._locked().close()  # (closing the file lets the lock go)

    def _locked(self) -> IO[str]:
        """The log's lock file, locked for this process alone (`BusError` if another
        holds it): one process writes the log."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = self.path.with_suffix(".lock").open("w")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            raise BusError(f"{self.path} is in use by another handoff process") from None
        return lock_file

    async def start(self) -> None:
        self._lock_file = self._locked()
        # Inline sqlite3 (no worker thread): each call takes microseconds, and this process
        # is the log's only writer.
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = WalCheckpointer(str(self.path))
        self._checkpointer.start()
        self._conn.executescript(_SCHEMA)
        self._partitions = dict(self._conn.execute("SELECT name, partitions FROM topics"))
        query = 'SELECT topic, partition, MAX("offset") FROM records GROUP BY topic, partition'
        for topic, partition, last in self._conn.execute(query):
            self._end[(topic, partition)] = last + 1

    async def close(self) -> None:
        for members in list(self._groups.values()):
            for member in list(members):
                await member.close()
        if self._conn is not None:
            self._checkpointer.stop()
            self._conn.close()
            self._conn = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise BusError("LocalBus is not started")
        return self._conn

    async def ping(self) -> None:
        self.conn.execute("SELECT 1")

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        async with self._write_lock:
            await self._create_missing(topics)
            self.conn.commit()

    async def _create_missing(self, topics: Sequence[str]) -> None:
        for topic in topics:
            if topic not in self._partitions:
                self.conn.execute(
                    "INSERT OR IGNORE INTO topics VALUES (?, ?)", (topic, self.default_partitions)
                )
                self._partitions[topic] = self.default_partitions

    def partitions_of(self, topic: str) -> int:
        return self._partitions.get(topic, self.default_partitions)

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if not messages:
            return
        now = int(time.time() * 1000)
        async with self._write_lock:
            await self._checkpointer.before_write()
            end = dict(self._end)
            rows = []
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                await self._create_missing(sorted({m.topic for m in messages}))
                for m in messages:
                    tp = (m.topic, partition_for(m.key, self._partitions[m.topic]))
                    offset = end.get(tp, 0)
                    end[tp] = offset + 1
                    rows.append((*tp, offset, m.key, m.value, dump_headers(m.headers), now))
                self.conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                self.conn.commit()
            except BaseException:
                self.conn.rollback()
                raise
            self._end.update(end)
        async with self._appended:
            self._appended.notify_all()

    def subscribe(
        self, *, group: str, topics: Sequence[str], on_revoke: RevokeHook | None = None
    ) -> LocalSubscription:
        return LocalSubscription(self, group=group, topics=tuple(topics), on_revoke=on_revoke)

    # --- group coordination (in-process: one process owns the log) ---

    async def _join(self, member: LocalSubscription) -> None:
        async with self._group_lock[member.group]:
            members = self._groups[member.group]
            members.append(member)
            try:
                await self._rebalance(member.group)
            except BaseException:
                # not a member after all: none may hold partitions nobody polls
                members.remove(member)
                with contextlib.suppress(Exception):
                    await self._rebalance(member.group)
                raise

    async def _leave(self, member: LocalSubscription) -> None:
        async with self._group_lock[member.group]:
            members = self._groups[member.group]
            if member in members:
                members.remove(member)
                await self._rebalance(member.group)

    async def _rebalance(self, group: str) -> None:
        members = self._groups[group]
        for member in members:
            await member._revoke()
        topics = sorted({t for m in members for t in m.topics})
        async with self._write_lock:
            await self._create_missing(topics)
            self.conn.commit()
        partitions = [(t, p) for t in topics for p in range(self.partitions_of(t))]
        committed = await self._committed(group)
        plan: dict[int, list[TopicPartition]] = defaultdict(list)
        eligible = {id(m): [tp for tp in partitions if tp[0] in m.topics] for m in members}
        for index, tp in enumerate(partitions):
            candidates = [m for m in members if tp in eligible[id(m)]]
            if candidates:
                plan[id(candidates[index % len(candidates)])].append(tp)
        for member in members:
            member._assign({tp: committed.get(tp, 0) for tp in plan[id(member)]})

    async def _committed(self, group: str) -> dict[TopicPartition, int]:
        query = "SELECT topic, partition, next_offset FROM group_offsets WHERE grp = ?"
        return {(t, p): o for t, p, o in self.conn.execute(query, (group,))}

    async def _commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        async with self._write_lock:
            self.conn.executemany(
                "INSERT INTO group_offsets VALUES (?, ?, ?, ?) ON CONFLICT (grp, topic, partition)"
                " DO UPDATE SET next_offset = excluded.next_offset",
                [(group, t, p, o) for (t, p), o in offsets.items()],
            )
            self.conn.commit()

    async def _fetch(
        self, positions: dict[TopicPartition, int], max_records: int, turn: int = 0
    ) -> tuple[list[Record], int]:
        """Up to `max_records` committed records after `positions`, and the `turn` of the
        next fetch. The records are shared among the partitions that have any (Kafka's
        fetcher too serves every partition, not the first one's backlog): each gets an equal
        share and what one does not need goes to the others. The `turn`-th of them is served
        first, and the next turn starts after the last one served (or one further on, when
        all were), so each takes its turn at the odd records, or at all of them when fewer
        are asked than partitions have. One query per partition served, in offset order;
        none for an idle one."""
        ready: list[tuple[TopicPartition, int, int]] = []
        for tp, position in positions.items():
            end = self._end.get(tp, 0)  # committed rows only
            if position < end:
                ready.append((tp, position, end))
        if not ready:
            return [], turn
        if len(ready) > 1:
            first = turn % len(ready)
            ready = ready[first:] + ready[:first]
        quotas = [end - position for _, position, end in ready]  # all each one has
        if sum(quotas) > max_records:
            quotas = _shares(quotas, max_records)
        records: list[Record] = []
        served = 0
        query = (
            'SELECT "offset", key, value, headers, ts FROM records WHERE topic = ? AND '
            'partition = ? AND "offset" >= ? AND "offset" < ? ORDER BY "offset" LIMIT ?'
        )
        for ((topic, partition), position, end), quota in zip(ready, quotas, strict=True):
            if quota == 0:
                continue
            served += 1
            records.extend(
                Record(topic, partition, offset, key, value, load_headers(headers), ts)
                for offset, key, value, headers, ts in self.conn.execute(
                    query, (topic, partition, position, end, quota)
                )
            )
        return records, turn + (served if served < len(ready) else 1)

    async def _wait_for_append(self, seen: dict[TopicPartition, int], timeout: float) -> None:
        def grew() -> bool:
            return any(self._end.get(tp, 0) > pos for tp, pos in seen.items())

        async with self._appended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._appended.wait_for(grew), timeout)

    def end_offset(self, tp: TopicPartition) -> int:
        return self._end.get(tp, 0)


def _shares(available: Sequence[int], budget: int) -> list[int]:
    """How many records each partition gives to a fetch of `budget`: equal shares, capped
    by what each has, with what the small ones leave over shared among the rest; the odd
    records go to the first partitions in `available`'s order."""
    shares = [0] * len(available)
    pending = list(range(len(available)))
    while budget > 0 and pending:
        share = max(1, budget // len(pending))
        still: list[int] = []
        for i in pending:
            take = min(share, available[i] - shares[i], budget)
            shares[i] += take
            budget -= take
            if shares[i] < available[i]:
                still.append(i)
            if budget == 0:
                break
        pending = still
    return shares

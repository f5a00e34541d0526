"""A LocalBus subscription whose join fails is no member of its group: it holds no
partitions, and the group's other members keep theirs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.bus.local import LocalBus


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[LocalBus]:
    instance = LocalBus(tmp_path / "events.db", partitions=4)
    await instance.start()
    yield instance
    await instance.close()


async def test_a_subscription_whose_join_fails_leaves_no_member_behind(
    bus: LocalBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = bus.subscribe(group="g", topics=["t.members"])
    await first.start()
    create_missing = bus._create_missing

    async def fails_once(topics: list[str]) -> None:
        monkeypatch.setattr(bus, "_create_missing", create_missing)
        raise OSError("disk full")

    monkeypatch.setattr(bus, "_create_missing", fails_once)
    second = bus.subscribe(group="g", topics=["t.members"])
    with pytest.raises(OSError, match="disk full"):
        await second.start()

    assert second.assignment() == set()
    assert first.assignment() == {("t.members", p) for p in range(4)}
    third = bus.subscribe(group="g", topics=["t.members"])
    await third.start()  # shares the partitions with the first only
    assert len(first.assignment()) + len(third.assignment()) == 4
    await first.close()
    await third.close()

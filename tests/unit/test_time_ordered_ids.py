"""Time-ordered ids (new leads and accounts; events, as text): canonical UUIDv7 text,
ordered by creation time, unique."""

from __future__ import annotations

import types
import uuid

import pytest

from shared import ids

MAKERS = pytest.mark.parametrize("make", ["time_ordered_id", "time_ordered_event_id"])


@MAKERS
def test_an_id_is_a_canonical_version_7_uuid(make: str) -> None:
    for _ in range(100):
        text = getattr(ids, make)()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


@MAKERS
def test_ids_sort_by_the_millisecond_they_were_made_in(
    monkeypatch: pytest.MonkeyPatch, make: str
) -> None:
    clock = types.SimpleNamespace(time_ns=lambda: 0)
    monkeypatch.setattr(ids, "time", clock)
    made = []
    for ms in (1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_999, 1_800_000_000_000):
        clock.time_ns = lambda ms=ms: ms * 1_000_000 + 999_999
        made += [(ms, getattr(ids, make)()) for _ in range(50)]
    for ms, text in made:
        assert uuid.UUID(text).int >> 80 == ms  # the Unix milliseconds lead the id
    ordered = sorted(made, key=lambda pair: pair[1])
    assert [ms for ms, _ in ordered] == sorted(ms for ms, _ in made)


@MAKERS
def test_ids_made_in_one_millisecond_are_distinct(
    monkeypatch: pytest.MonkeyPatch, make: str
) -> None:
    monkeypatch.setattr(
        ids, "time", types.SimpleNamespace(time_ns=lambda: 1_700_000_000_000_000_000)
    )
    assert len({getattr(ids, make)() for _ in range(10_000)}) == 10_000

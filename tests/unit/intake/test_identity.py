"""A lead's field keeps the value of the latest event that set it, by when the event
happened: a retried webhook that arrives late does not undo a newer value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from services.intake.identity import (
    CREATED,
    KnownLead,
    Merge,
    Timing,
    apply,
    created_times,
    merge,
    time_text,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
NOW = time_text(T0 + timedelta(hours=1))  # when the captures below are applied


def at(seconds: float) -> str:
    return time_text(T0 + timedelta(seconds=seconds))


def lead(times: dict[str, str] | None = None, **profile: Any) -> KnownLead:
    return KnownLead(
        id="l1",
        email="kim@wayne.com",
        source="marketing",
        account_id=None,
        profile=dict(profile),
        field_sources=dict.fromkeys(profile, "marketing"),
        field_times=times if times is not None else {},
    )


def merged(
    known: KnownLead,
    incoming: dict[str, Any],
    timing: Timing,
    *,
    source: Any = "marketing",
    sales_owned: frozenset[str] = frozenset(),
) -> Merge:
    result = merge(
        known,
        incoming,
        source=source,
        external_ids={},
        sales_owned=sales_owned,
        at=NOW,
        timing=timing,
    )
    apply(known, result, source=source)
    return result


def test_times_compare_as_text_in_the_order_of_the_times_they_name() -> None:
    moments = [
        datetime(1, 1, 1, tzinfo=UTC),
        T0,
        T0 + timedelta(microseconds=1),
        T0 + timedelta(seconds=1),
        T0.replace(year=2027),
    ]
    other_zone = datetime(2026, 3, 2, 13, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=5)))

    assert sorted(time_text(m) for m in moments) == [time_text(m) for m in moments]
    assert time_text(T0) == "2026-03-02T12:00:00.000000Z"
    assert time_text(other_zone) == "2026-03-02T13:00:00.000000Z"


def test_a_late_older_event_leaves_a_newer_value_and_the_events_other_fields_apply() -> None:
    known = lead(job_title="CEO")
    merged(known, {"job_title": "CEO"}, at(5))  # (the newer event, set first)

    late = merged(known, {"job_title": "CFO", "industry": "Retail"}, at(1))

    assert late.changes == {"industry": "Retail"}
    assert late.stale == ["job_title"]
    assert known.profile == {"job_title": "CEO", "industry": "Retail"}
    assert known.field_times == {"job_title": at(5), "industry": at(1)}


def test_a_newer_event_applies_and_records_when_it_happened() -> None:
    known = lead({"job_title": at(1)}, job_title="CFO")

    newer = merged(known, {"job_title": "CEO"}, at(5))

    assert (newer.changes, newer.stale) == ({"job_title": "CEO"}, [])
    assert known.field_times["job_title"] == at(5)


def test_a_value_that_comes_back_is_not_undone_by_the_event_in_between() -> None:
    """Open (t1), Working (t2), Open (t3), arriving t1, t3, t2: the lead stays Open."""
    known = lead()
    merged(known, {"custom": {"status": "Open"}, "job_title": "CEO"}, at(1))
    again = merged(known, {"custom": {"status": "Open"}, "job_title": "CEO"}, at(3))
    late = merged(known, {"custom": {"status": "Working"}, "job_title": "CTO"}, at(2))

    assert again.changes == {} and again.times == {"custom.status": at(3), "job_title": at(3)}
    assert late.changes == {} and late.stale == ["custom.status", "job_title"]
    assert known.profile == {"custom": {"status": "Open"}, "job_title": "CEO"}


def test_a_capture_that_does_not_say_when_happens_now_and_always_applies() -> None:
    known = lead({"job_title": NOW}, job_title="CEO")  # (set by a webhook, just now)

    api = merged(known, {"job_title": "CTO"}, None)
    older = merged(known, {"job_title": "CFO"}, at(30))
    unchanged = merged(known, {"job_title": "CTO"}, None)

    assert api.changes == {"job_title": "CTO"} and known.field_times["job_title"] == NOW
    assert (older.changes, older.stale) == ({}, ["job_title"])
    assert (unchanged.changes, unchanged.times) == ({}, {})  # (nothing to write)


def test_an_event_is_never_taken_to_be_later_than_the_capture() -> None:
    known = lead()
    future = time_text(T0 + timedelta(days=400))

    merged(known, {"job_title": "CEO"}, future)

    assert known.field_times["job_title"] == NOW  # (else it would outlive every later capture)
    assert created_times({"job_title": "CEO"}, NOW, future) == {CREATED: NOW}


def test_custom_attributes_keep_a_time_each() -> None:
    known = lead()
    merged(known, {"custom": {"a": 1, "b": 1}}, at(1))
    merged(known, {"custom": {"b": 2}}, at(5))

    late = merged(known, {"custom": {"a": 3, "b": 3}}, at(3))

    assert late.stale == ["custom.b"]
    assert known.profile["custom"] == {"a": 3, "b": 2}
    assert known.field_times == {"custom.a": at(3), "custom.b": at(5)}


def test_a_new_lead_keeps_one_time_for_the_fields_it_was_made_with() -> None:
    profile = {"job_title": "CEO", "custom": {"a": 1}}
    per_field = {"job_title": at(2), "custom.a": at(1), "source": at(2)}

    assert created_times(profile, NOW, None) == {CREATED: NOW}
    assert created_times(profile, NOW, at(2)) == {CREATED: at(2)}
    assert created_times(profile, NOW, per_field) == {
        CREATED: NOW,
        "job_title": at(2),
        "custom.a": at(1),
    }


def test_the_lead_creations_time_covers_only_the_fields_it_was_made_with() -> None:
    """A field the lead never had takes an event older than the lead: no event set it."""
    known = lead({CREATED: at(10)}, job_title="CEO", custom={"a": 1})

    older = merged(known, {"job_title": "CFO", "industry": "Retail", "custom": {"a": 2}}, at(5))

    assert older.changes == {"industry": "Retail"}
    assert older.stale == ["custom.a", "job_title"]


def test_a_lead_stored_before_times_were_kept_takes_any_event() -> None:
    known = lead(job_title="CEO")

    result = merged(known, {"job_title": "CFO"}, at(1))

    assert result.changes == {"job_title": "CFO"} and known.field_times == {"job_title": at(1)}


def test_ownership_still_protects_sales_fields_and_a_stale_sales_event_confirms_nothing() -> None:
    known = lead({"job_title": at(5), "industry": at(5)}, job_title="CEO", industry="Retail")
    known.field_sources["job_title"] = "sales"

    marketing = merged(known, {"job_title": "CTO"}, at(9), sales_owned=frozenset({"job_title"}))
    stale_sales = merged(known, {"industry": "Retail"}, at(1), source="sales")

    assert (marketing.changes, marketing.protected) == ({}, ["job_title"])
    assert known.field_times["job_title"] == at(5)  # (a protected field was not set)
    assert (stale_sales.changes, stale_sales.confirmed) == ({}, [])
    assert known.field_sources["industry"] == "marketing"

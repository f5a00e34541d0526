"""The lifecycle state machine: the allowed moves, their records, and replay."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from services.qualification.lifecycle import (
    TRANSITIONS,
    IllegalTransition,
    LeadLifecycle,
    LifecyclePolicy,
    NotQualified,
    Step,
    Transition,
    replay,
)
from shared.events.payloads import Actor

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
# DESIGN section 2, written out by hand: every move a lead may ever make.
DESIGN_MOVES = {
    (None, "lead"),
    (None, "sgl"),
    ("lead", "mql"),
    ("nurture", "mql"),
    ("mql", "sal"),
    ("sgl", "sal"),
    ("mql", "nurture"),
    ("sgl", "nurture"),
    ("mql", "disqualified"),
    ("sgl", "disqualified"),
    ("sal", "sql"),
    ("sal", "nurture"),
    ("sql", "won"),
    ("sql", "lost"),
    ("lost", "nurture"),
}
REP = Actor(kind="user", id="rep-7")


@dataclass(frozen=True)
class FakeScore:
    total: float = 60
    fit: float = 20
    model_version: str = "m-1"
    qualifies_for_mql: bool = True
    last_engagement_at: datetime | None = T0


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def mql() -> LeadLifecycle:
    lead = LeadLifecycle().capture("marketing", at=at(0)).lifecycle
    return lead.score_crossed(FakeScore(), at=at(1)).lifecycle


def in_nurture(cooldown_days: float = 30) -> LeadLifecycle:
    policy = LifecyclePolicy(recycle_cooldown=timedelta(days=cooldown_days))
    lead = LeadLifecycle(policy=policy).capture("marketing", at=at(0)).lifecycle
    offered = lead.score_crossed(FakeScore(), at=at(1)).lifecycle
    return offered.reject(REP, "not_ready", "call back next quarter", at=at(2)).lifecycle


def test_the_transition_table_is_the_one_in_the_design() -> None:
    assert set(TRANSITIONS) == DESIGN_MOVES


def test_marketing_captures_start_as_lead_and_sales_captures_as_sgl() -> None:
    lead, [captured] = LeadLifecycle().capture("marketing", at=at(0))
    sgl, _ = LeadLifecycle().capture("sales", at=at(0), actor=REP)

    assert (lead.stage, sgl.stage) == ("lead", "sgl")
    assert (captured.from_stage, captured.to_stage, captured.reason.code) == (
        None,
        "lead",
        "captured",
    )


def test_a_qualifying_score_makes_a_lead_an_mql_citing_the_model_version() -> None:
    lead = LeadLifecycle().capture("marketing", at=at(0)).lifecycle

    after, [transition] = lead.score_crossed(FakeScore(model_version="m-9"), at=at(1))

    assert after.stage == "mql"
    assert (transition.actor.kind, transition.model_version) == ("system", "m-9")
    assert transition.reason.code == "score_threshold"


def test_a_score_below_the_bar_makes_no_mql() -> None:
    lead = LeadLifecycle().capture("marketing", at=at(0)).lifecycle

    assert not lead.mql_due(FakeScore(qualifies_for_mql=False))
    with pytest.raises(NotQualified, match="below the MQL bar"):
        lead.score_crossed(FakeScore(qualifies_for_mql=False), at=at(1))


def test_the_owner_accepting_an_mql_makes_it_sal() -> None:
    after, [transition] = mql().accept(REP, at=at(2), note="good fit")

    assert after.stage == "sal"
    assert (transition.actor, transition.reason.code, transition.reason.text) == (
        REP,
        "accepted",
        "good fit",
    )


def test_rejected_mql_goes_back_to_nurture_with_reason() -> None:
    after, [transition] = mql().reject(REP, "Not_Ready", "no project this year", at=at(2))

    assert (after.stage, after.recycled_at) == ("nurture", at(2))
    assert (transition.reason.code, transition.reason.text) == ("not_ready", "no project this year")


@pytest.mark.parametrize("code", ["spam", "duplicate", "competitor"])
def test_spam_duplicates_and_competitors_are_disqualified(code: str) -> None:
    sgl = LeadLifecycle().capture("sales", at=at(0), actor=REP).lifecycle

    after, _ = sgl.reject(REP, code, at=at(1))

    assert after.stage == "disqualified"
    assert after.allowed_commands() == {}


def test_a_recycled_lead_returns_to_mql_only_with_engagement_after_the_cooldown() -> None:
    nurture = in_nurture(cooldown_days=30)  # recycled at day 2
    stale = FakeScore(last_engagement_at=at(20))
    fresh = FakeScore(last_engagement_at=at(33))

    assert not nurture.mql_due(stale)
    with pytest.raises(NotQualified, match="needs engagement after"):
        nurture.score_crossed(stale, at=at(21))
    after, [transition] = nurture.score_crossed(fresh, at=at(33))
    assert (transition.from_stage, after.stage) == ("nurture", "mql")
    assert transition.reason.text.startswith("recycled:")


def test_bant_decides_between_sql_and_nurture_listing_unmet_criteria() -> None:
    sal = mql().accept(REP, at=at(2)).lifecycle
    assessment = uuid.uuid4()

    passed, [up] = sal.bant_decided(True, [], actor=REP, at=at(3), assessment_id=assessment)
    failed, [down] = sal.bant_decided(False, ["budget", "timeframe"], actor=REP, at=at(3))

    assert (passed.stage, up.bant_assessment_id, up.reason.code) == (
        "sql",
        assessment,
        "bant_passed",
    )
    assert (failed.stage, down.reason.code) == ("nurture", "bant_failed")
    assert down.reason.text == "unmet criteria: budget, timeframe"


def test_a_won_deal_records_amount_and_currency() -> None:
    sql = mql().accept(REP, at=at(2)).lifecycle.bant_decided(True, [], actor=REP, at=at(3))

    won, [transition] = sql.lifecycle.won(REP, Decimal("12000.50"), "eur", at=at(40))

    assert won.stage == "won"
    assert (transition.amount, transition.currency, transition.reason.text) == (
        Decimal("12000.50"),
        "EUR",
        "12000.50 EUR",
    )


def test_a_lost_deal_is_recycled_to_nurture_by_the_system() -> None:
    sql = mql().accept(REP, at=at(2)).lifecycle.bant_decided(True, [], actor=REP, at=at(3))

    after, (lost, recycled) = sql.lifecycle.lost(
        REP, "price", "went with the cheaper one", at=at(9)
    )

    assert after.stage == "nurture"
    assert (lost.from_stage, lost.to_stage, lost.actor, lost.reason.code) == (
        "sql",
        "lost",
        REP,
        "price",
    )
    assert (recycled.from_stage, recycled.to_stage, recycled.actor.kind) == (
        "lost",
        "nurture",
        "system",
    )
    assert recycled.reason.code == "recycled"


def test_an_illegal_command_names_the_stage_and_what_is_allowed() -> None:
    with pytest.raises(IllegalTransition) as caught:
        mql().won(REP, Decimal(1), "EUR", at=at(2))

    assert caught.value.stage == "mql"
    assert caught.value.allowed_commands == ["accept", "reject"]
    assert caught.value.allowed_stages == ["disqualified", "nurture", "sal"]
    assert "cannot won a lead in stage mql" in str(caught.value)


def test_people_must_be_named_and_reasons_and_money_well_formed() -> None:
    with pytest.raises(ValueError, match="needs an id"):
        mql().accept(Actor(kind="user", id=" "), at=at(2))
    with pytest.raises(ValueError, match="reason code"):
        mql().reject(REP, "", at=at(2))
    with pytest.raises(ValueError, match="timezone-aware"):
        mql().accept(REP, at=datetime(2025, 1, 1))  # naive


def test_a_transition_becomes_the_stage_changed_event() -> None:
    lead_id = uuid.uuid4()
    _, [transition] = mql().reject(REP, "no_budget", "maybe in Q3", at=at(2))

    event = transition.to_event(lead_id)

    assert (event.lead_id, event.from_stage, event.to_stage) == (lead_id, "mql", "nurture")
    assert (event.actor, event.reason) == (REP, transition.reason)


def test_replay_refuses_a_history_with_a_gap() -> None:
    history = [*LeadLifecycle().capture("marketing", at=at(0)).transitions]
    accepted = mql().accept(REP, at=at(2)).transitions  # from mql, but replay is still at lead

    with pytest.raises(IllegalTransition):
        replay([*history, *accepted])


# Random command sequences: mostly commands the stage allows (to get deep), some it refuses.
ARGUMENTS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "capture": st.tuples(st.sampled_from(["marketing", "sales"])),
    "score_crossed": st.tuples(st.booleans(), st.floats(min_value=0, max_value=60)),
    "accept": st.just(()),
    "reject": st.tuples(st.sampled_from(["spam", "duplicate", "competitor", "not_ready"])),
    "bant_decided": st.tuples(st.booleans()),
    "won": st.just(()),
    "lost": st.tuples(st.sampled_from(["price", "no_decision"])),
}


def run(lifecycle: LeadLifecycle, name: str, args: tuple[Any, ...], when: datetime) -> Step:
    if name == "capture":
        return lifecycle.capture(args[0], at=when)
    if name == "score_crossed":
        engaged = when - timedelta(days=args[1])
        return lifecycle.score_crossed(
            FakeScore(qualifies_for_mql=args[0], last_engagement_at=engaged), at=when
        )
    if name == "accept":
        return lifecycle.accept(REP, at=when)
    if name == "reject":
        return lifecycle.reject(REP, args[0], at=when)
    if name == "bant_decided":
        return lifecycle.bant_decided(args[0], [] if args[0] else ["need"], actor=REP, at=when)
    if name == "won":
        return lifecycle.won(REP, Decimal(100), "USD", at=when)
    return lifecycle.lost(REP, args[0], at=when)


def draw_command(data: st.DataObject, lifecycle: LeadLifecycle) -> tuple[str, tuple[Any, ...]]:
    allowed = sorted(lifecycle.allowed_commands())
    anything = st.sampled_from(sorted(ARGUMENTS))
    name = data.draw(st.one_of(st.sampled_from(allowed), anything) if allowed else anything)
    return name, data.draw(ARGUMENTS[name])


@given(st.data())
def test_random_commands_only_ever_move_along_the_table_and_replay_to_the_same_stage(
    data: st.DataObject,
) -> None:
    lifecycle = LeadLifecycle(policy=LifecyclePolicy(recycle_cooldown=timedelta(days=7)))
    history: list[Transition] = []
    for day in range(data.draw(st.integers(min_value=0, max_value=40))):
        name, args = draw_command(data, lifecycle)
        if name not in lifecycle.allowed_commands():
            with pytest.raises(IllegalTransition) as refused:
                run(lifecycle, name, args, at(day))
            assert refused.value.allowed == lifecycle.allowed_commands()
            continue
        try:
            lifecycle, transitions = run(lifecycle, name, args, at(day))
        except NotQualified:
            assert name == "score_crossed"
            continue
        assert all((t.from_stage, t.to_stage) in DESIGN_MOVES for t in transitions)
        assert all(t.reason.code for t in transitions)
        history.extend(transitions)
        event(f"reached {lifecycle.stage}")
    assert replay(history, lifecycle.policy) == lifecycle

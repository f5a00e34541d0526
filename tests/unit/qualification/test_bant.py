"""BANT policies: required criteria, how many must be met, and what unknown means."""

from __future__ import annotations

import pydantic
import pytest

from services.qualification.bant import (
    DEFAULT_POLICY,
    BantAssessment,
    BantPolicy,
    CriterionAssessment,
    Status,
    evaluate,
)


def assessment(
    budget: Status = "unknown",
    authority: Status = "unknown",
    need: Status = "unknown",
    timeframe: Status = "unknown",
) -> BantAssessment:
    return BantAssessment(
        budget=CriterionAssessment(status=budget, note="asked on the call"),
        authority=CriterionAssessment(status=authority),
        need=CriterionAssessment(status=need),
        timeframe=CriterionAssessment(status=timeframe),
    )


def test_three_of_four_with_need_passes_the_default_policy_and_lists_the_gap() -> None:
    decision = evaluate(assessment("met", "met", "met", "not_met"), DEFAULT_POLICY)

    assert decision.passed
    assert decision.unmet == ["timeframe"]
    assert (
        decision.explanation
        == "passed: 3 of 4 criteria met (budget, authority, need), required need all met"
    )


def test_a_missing_required_criterion_fails_however_many_others_are_met() -> None:
    policy = BantPolicy(required=("budget", "authority"), min_met=2)

    decision = evaluate(assessment("not_met", "met", "met", "met"), policy)

    assert not decision.passed
    assert decision.unmet == ["budget"]
    assert decision.explanation == "failed: budget is required but not_met"


def test_unknown_counts_as_not_met() -> None:
    decision = evaluate(assessment("met", "unknown", "met", "unknown"), DEFAULT_POLICY)

    assert not decision.passed
    assert decision.unmet == ["authority", "timeframe"]
    assert decision.explanation == "failed: 2 of 4 criteria met, the policy needs 3"


def test_required_and_count_failures_are_both_explained() -> None:
    decision = evaluate(assessment(budget="met"), BantPolicy(required=("need",), min_met=2))

    assert (
        decision.explanation
        == "failed: need is required but unknown; 1 of 4 criteria met, the policy needs 2"
    )


def test_a_policy_without_requirements_passes_anything() -> None:
    decision = evaluate(BantAssessment(), BantPolicy())

    assert decision.passed
    assert decision.unmet == ["budget", "authority", "need", "timeframe"]


def test_policies_come_from_configuration_and_bad_ones_are_refused() -> None:
    policy = BantPolicy.model_validate({"required": ["need", "timeframe"], "min_met": 4})

    assert evaluate(assessment("met", "met", "met", "met"), policy).passed
    with pytest.raises(pydantic.ValidationError, match="twice"):
        BantPolicy.model_validate({"required": ["need", "need"]})
    with pytest.raises(pydantic.ValidationError, match="less than or equal to 4"):
        BantPolicy.model_validate({"min_met": 5})
    with pytest.raises(pydantic.ValidationError, match="budget"):
        BantPolicy.model_validate({"required": ["money"]})

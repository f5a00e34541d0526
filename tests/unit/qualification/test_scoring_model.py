"""The scoring model document: loading YAML or JSON, and errors that name the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.qualification.scoring_model import (
    InvalidScoringModel,
    Problem,
    default_model,
    load_model,
)


def document(**fields: Any) -> str:
    return json.dumps({"version": "t-1", "mql_threshold": 50, **fields})


def problems(text: str) -> list[Problem]:
    with pytest.raises(InvalidScoringModel) as caught:
        load_model(text)
    return caught.value.problems


def fit_rule(**fields: Any) -> str:
    return document(fit_rules=[{"id": "size", "attribute": "company_size", "points": 5, **fields}])


def test_a_model_loads_from_yaml_and_from_json() -> None:
    yaml_text = """
version: "2025.1"
mql_threshold: 40
min_fit: 5
fit_rules:
  - {id: big, attribute: company_size, operator: range, min: 1000, points: 20}
engagement:
  half_life_days: 30
  activities:
    page_view: {points: 1, cap: 10, window_days: 7}
negative_signals:
  - {id: unsub, activity_type: email_unsubscribe, points: -20}
"""
    from_yaml = load_model(yaml_text)

    assert load_model(from_yaml.model_dump_json()) == from_yaml
    assert from_yaml.engagement.half_life("page_view") == 30
    assert (from_yaml.version, from_yaml.mql_threshold, from_yaml.min_fit) == ("2025.1", 40, 5)


def test_the_default_model_ships_loadable() -> None:
    model = default_model()

    assert model.version == "default-1"
    assert "business_email" in {rule.id for rule in model.fit_rules}
    assert "competitor" in {signal.id for signal in model.negative_signals}


def test_a_range_without_bounds_is_refused_naming_the_rule() -> None:
    [problem] = problems(fit_rule(operator="range"))

    assert problem.field == "fit_rules[0] (size)"
    assert "range needs `min`, `max` or both" in problem.message


def test_a_range_with_min_above_max_is_refused() -> None:
    [problem] = problems(fit_rule(operator="range", min=10, max=1))

    assert "`min` (10) is greater than `max` (1)" in problem.message


def test_an_unknown_operator_is_refused_with_the_known_ones() -> None:
    [problem] = problems(fit_rule(operator="between"))

    assert problem.field == "fit_rules[0] (size).operator"
    assert "'equals', 'in', 'range', 'exists', 'pattern' or 'freemail'" in problem.message


def test_an_operand_the_operator_does_not_read_is_refused() -> None:
    [problem] = problems(fit_rule(operator="equals", values=[1, 2]))

    assert "`values` does not apply to operator equals" in problem.message


def test_an_invalid_regular_expression_is_refused_at_its_field() -> None:
    [problem] = problems(fit_rule(attribute="job_title", operator="pattern", pattern="(student"))

    assert problem.field == "fit_rules[0] (size).pattern"
    assert "invalid regular expression" in problem.message


def test_duplicate_rule_ids_are_refused() -> None:
    rule = {"id": "twice", "attribute": "country", "operator": "exists", "points": 1}
    signal = {"id": "twice", "activity_type": "email_bounce", "points": -1}

    [problem] = problems(document(fit_rules=[rule], negative_signals=[signal]))

    assert "duplicate rule id 'twice'" in problem.message


def test_negative_signals_must_take_points_away_and_be_one_kind() -> None:
    positive = {"id": "s", "activity_type": "email_bounce", "points": 5}
    both = {"id": "s", "activity_type": "email_bounce", "attribute": "country", "points": -5}

    assert (
        problems(document(negative_signals=[positive]))[0].field == "negative_signals[0] (s).points"
    )
    assert "not both (`attribute`)" in problems(document(negative_signals=[both]))[0].message


def test_a_window_needs_a_cap_and_freemail_reads_the_email() -> None:
    engagement = {"activities": {"page_view": {"points": 1, "window_days": 7}}}

    assert "`window_days` needs a `cap`" in problems(document(engagement=engagement))[0].message
    assert "freemail reads" in problems(fit_rule(operator="freemail"))[0].message


def test_yaml_pitfalls_are_explained() -> None:
    unquoted_version = "version: 1.10\nmql_threshold: 50\n"
    norway = fit_rule(attribute="country", operator="in", values=["SE", False])

    assert "quote the version" in problems(unquoted_version)[0].message
    assert "quote words like 'NO'" in problems(norway)[0].message
    assert problems("fit_rules: [")[0].message.startswith("not valid YAML or JSON")
    assert problems("- just a list")[0].message == "the document must be a mapping of fields"


def test_misspelt_fields_are_refused_rather_than_ignored() -> None:
    [problem] = problems(document(mql_treshold=40))

    assert (problem.field, problem.message) == ("mql_treshold", "Extra inputs are not permitted")

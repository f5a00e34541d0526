"""The scoring model document: fit rules, engagement points, negative signals, thresholds.

A model is a YAML or JSON document with a version that marketing and sales sign off
together. This module only describes and validates the document; `scoring` applies it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.validation_errors import error_reason

Operator = Literal["equals", "in", "range", "exists", "pattern", "freemail"]
Scalar = bool | int | float | str
RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Attribute = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*(\.[A-Za-z0-9_-]+)*$")]
ActivityTypeName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Days = Annotated[float, Field(gt=0, le=3650)]
Points = Annotated[float, Field(ge=-1000, le=1000)]

EMAIL_ATTRIBUTES = ("email_kind", "email_domain")
OPERAND_FIELDS = ("value", "values", "min", "max", "pattern", "case_sensitive")
# The operand fields each operator reads; any other operand given is a mistake in the document.
OPERANDS: Mapping[str, frozenset[str]] = {
    "equals": frozenset({"value", "case_sensitive"}),
    "in": frozenset({"values", "case_sensitive"}),
    "range": frozenset({"min", "max"}),
    "exists": frozenset(),
    "pattern": frozenset({"pattern", "case_sensitive"}),
    "freemail": frozenset({"values"}),
}


class _Document(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Condition(_Document):
    """A test on one profile attribute, shared by fit rules and negative signals."""

    attribute: Attribute | None = None
    operator: Operator | None = None
    value: Scalar | None = None
    values: list[Scalar] | None = Field(default=None, min_length=1, max_length=1000)
    min: float | None = None
    max: float | None = None
    pattern: str | None = Field(default=None, min_length=1, max_length=200)
    case_sensitive: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
        return pattern

    def condition_problem(self) -> str | None:
        """What is wrong with the attribute test, or None when it is well formed."""
        operator = self.operator
        if self.attribute is None or operator is None:
            return "`attribute` and `operator` are both required"
        if unused := sorted(self.operands_given() - OPERANDS[operator]):
            return f"`{unused[0]}` does not apply to operator {operator}"
        if operator == "equals" and self.value is None:
            return "operator equals needs `value`"
        if operator == "in" and not self.values:
            return "operator in needs a non-empty `values` list"
        if operator == "pattern" and self.pattern is None:
            return "operator pattern needs `pattern` (a regular expression)"
        if operator == "freemail" and self.attribute not in EMAIL_ATTRIBUTES:
            return "operator freemail reads `attribute: email_kind` or `email_domain`"
        if operator == "range":
            return _range_problem(self.min, self.max)
        return _yaml_words_problem(self.values)

    def operands_given(self) -> set[str]:
        """The operand fields set to something other than their default (null, false)."""
        defaults = {"case_sensitive": False}
        return {n for n in OPERAND_FIELDS if getattr(self, n) != defaults.get(n)}


def _range_problem(low: float | None, high: float | None) -> str | None:
    if low is None and high is None:
        return "operator range needs `min`, `max` or both"
    if low is not None and high is not None and low > high:
        return f"`min` ({low:g}) is greater than `max` ({high:g})"
    return None


def _yaml_words_problem(values: list[Scalar] | None) -> str | None:
    # YAML 1.1 reads unquoted NO, yes, on, off as booleans: Norway would become False.
    kinds = {type(v) for v in values or ()}
    if bool in kinds and str in kinds:
        return "`values` mixes true/false with text: quote words like 'NO' or 'on'"
    return None


class FitRule(Condition):
    """Points for who the lead is: one attribute test on the profile."""

    id: RuleId
    description: str = ""
    points: Points

    @model_validator(mode="after")
    def _operands(self) -> Self:
        if problem := self.condition_problem():
            raise ValueError(problem)
        return self


class NegativeSignal(Condition):
    """Points taken away: for an activity type (counted once) or for a profile condition."""

    id: RuleId
    description: str = ""
    points: Annotated[float, Field(lt=0, ge=-1000)]
    activity_type: ActivityTypeName | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        problem = self.condition_problem() if self.activity_type is None else None
        given = self.operands_given() | {
            n for n in ("attribute", "operator") if getattr(self, n) is not None
        }
        if self.activity_type is not None and given:
            names = ", ".join(f"`{name}`" for name in sorted(given))
            problem = f"give `activity_type` or an attribute test, not both ({names})"
        if problem:
            raise ValueError(problem)
        return self


class ActivityPoints(_Document):
    """Engagement points for one activity type, with an optional cap and decay."""

    points: Annotated[float, Field(gt=0, le=1000)]
    cap: Annotated[float, Field(gt=0, le=10_000)] | None = None
    window_days: Days | None = None
    half_life_days: Days | None = None

    @model_validator(mode="after")
    def _window_needs_cap(self) -> Self:
        if self.window_days is not None and self.cap is None:
            raise ValueError("`window_days` needs a `cap` (the most points per window)")
        return self


class Engagement(_Document):
    """Points per activity type; `half_life_days` is the default decay for every type."""

    half_life_days: Days | None = None
    activities: dict[ActivityTypeName, ActivityPoints] = Field(default_factory=dict)

    def half_life(self, activity_type: str) -> float | None:
        """The half-life that applies to an activity type (None: no decay)."""
        rule = self.activities.get(activity_type)
        return rule.half_life_days if rule and rule.half_life_days else self.half_life_days


class ScoringModel(_Document):
    """A versioned scoring model document, validated."""

    version: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    description: str = ""
    fit_rules: list[FitRule] = Field(default_factory=list)
    engagement: Engagement = Field(default_factory=Engagement)
    negative_signals: list[NegativeSignal] = Field(default_factory=list)
    mql_threshold: float
    min_fit: float = 0.0

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_text(cls, version: object) -> object:
        if isinstance(version, int | float):
            raise ValueError(f'quote the version so it stays text, e.g. version: "{version}"')
        return version

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        seen: set[str] = set()
        rules: list[FitRule | NegativeSignal] = [*self.fit_rules, *self.negative_signals]
        for rule in rules:
            if rule.id in seen:
                raise ValueError(f"duplicate rule id {rule.id!r}")
            if rule.id in self.engagement.activities:
                raise ValueError(f"rule id {rule.id!r} is also an engagement activity type")
            seen.add(rule.id)
        return self


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a model document: where (`fit_rules[2].min`) and what."""

    field: str
    message: str


class InvalidScoringModel(ValueError):
    """The document is not a valid scoring model; `problems` says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field or 'document'}: {p.message}" for p in problems))


def load_model(text: str) -> ScoringModel:
    """Parse and validate a scoring model document written in YAML or JSON."""
    try:
        data = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise InvalidScoringModel([Problem("", f"not valid YAML or JSON: {exc}")]) from exc
    if not isinstance(data, dict):
        raise InvalidScoringModel([Problem("", "the document must be a mapping of fields")])
    try:
        return ScoringModel.model_validate(data)
    except ValidationError as exc:
        raise InvalidScoringModel([_problem(e, data) for e in exc.errors()]) from exc


def default_model() -> ScoringModel:
    """The scoring model that ships with handoff (`default_model.yaml`)."""
    text = resources.files(__package__ or __name__).joinpath("default_model.yaml").read_text()
    return load_model(text)


def _problem(error: Mapping[str, Any], data: Any) -> Problem:
    path = ""
    for part in error["loc"]:
        if isinstance(part, int):
            rule_id = _rule_id(data, part)
            data = data[part] if isinstance(data, list) and part < len(data) else None
            path += f"[{part}]" + (f" ({rule_id})" if rule_id else "")
        else:
            data = data.get(part) if isinstance(data, dict) else None
            path += f".{part}" if path else str(part)
    return Problem(path, error_reason(error))


def _rule_id(items: Any, index: int) -> str | None:
    if isinstance(items, list) and index < len(items) and isinstance(items[index], dict):
        rule_id = items[index].get("id")
        return str(rule_id) if rule_id is not None else None
    return None

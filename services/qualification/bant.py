"""BANT: budget, authority, need and timeframe, judged against the agreed policy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Criterion = Literal["budget", "authority", "need", "timeframe"]
Status = Literal["met", "not_met", "unknown"]
CRITERIA: tuple[Criterion, ...] = ("budget", "authority", "need", "timeframe")


class CriterionAssessment(BaseModel):
    """The rep's judgement of one criterion, with a note saying what it rests on."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    status: Status = "unknown"
    note: str = Field(default="", max_length=2000)


class BantAssessment(BaseModel):
    """A BANT assessment of one lead: each criterion met, not met or unknown."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget: CriterionAssessment = Field(default_factory=CriterionAssessment)
    authority: CriterionAssessment = Field(default_factory=CriterionAssessment)
    need: CriterionAssessment = Field(default_factory=CriterionAssessment)
    timeframe: CriterionAssessment = Field(default_factory=CriterionAssessment)

    def status(self, criterion: Criterion) -> Status:
        """The status of one criterion."""
        assessment: CriterionAssessment = getattr(self, criterion)
        return assessment.status


class BantPolicy(BaseModel):
    """Configuration: the criteria that must be met, and how many of the four in all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    required: tuple[Criterion, ...] = ()
    min_met: int = Field(default=0, ge=0, le=4)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.required)) != len(self.required):
            raise ValueError("`required` lists a criterion twice")
        return self


# Need is the one criterion no deal survives without; three of four is the common bar.
DEFAULT_POLICY = BantPolicy(required=("need",), min_met=3)


@dataclass(frozen=True)
class BantDecision:
    """Whether an assessment passes the policy, which criteria are not met, and why."""

    passed: bool
    unmet: list[str]
    explanation: str


def evaluate(assessment: BantAssessment, policy: BantPolicy) -> BantDecision:
    """Judge an assessment against the policy; `unknown` counts as not met."""
    met = [c for c in CRITERIA if assessment.status(c) == "met"]
    unmet: list[str] = [c for c in CRITERIA if c not in met]
    missing_required = [c for c in CRITERIA if c in policy.required and c not in met]
    needed = policy.min_met  # a required criterion that is met counts toward it too
    reasons = [f"{c} is required but {assessment.status(c)}" for c in missing_required]
    if len(met) < needed:
        reasons.append(f"{len(met)} of 4 criteria met, the policy needs {needed}")
    passed = not reasons
    if passed:
        explanation = f"passed: {len(met)} of 4 criteria met ({', '.join(met) or 'none'})"
        if policy.required:
            explanation += f", required {', '.join(policy.required)} all met"
    else:
        explanation = "failed: " + "; ".join(reasons)
    return BantDecision(passed=passed, unmet=unmet, explanation=explanation)

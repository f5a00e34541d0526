"""The lead lifecycle: which stage a lead is in, and the only moves between stages.

`LeadLifecycle` is an immutable value. Each command returns the next value and the
transitions it made; a command the current stage does not allow raises `IllegalTransition`
listing what is allowed. Replaying recorded transitions rebuilds the same value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal, NamedTuple, Protocol
from uuid import UUID

from shared.events.payloads import Actor, LeadSource, LeadStageChanged, Reason, Stage

Command = Literal["capture", "score_crossed", "accept", "reject", "bant_decided", "won", "lost"]

# What each stage allows: command -> the stages it can lead to. None is "not captured yet".
COMMANDS: Mapping[Stage | None, Mapping[Command, tuple[Stage, ...]]] = {
    None: {"capture": ("lead", "sgl")},
    "lead": {"score_crossed": ("mql",)},
    "mql": {"accept": ("sal",), "reject": ("nurture", "disqualified")},
    "sgl": {"accept": ("sal",), "reject": ("nurture", "disqualified")},
    "sal": {"bant_decided": ("sql", "nurture")},
    "sql": {"won": ("won",), "lost": ("lost",)},
    "won": {},
    "lost": {},  # left at once: a lost lead is recycled to nurture by the system
    "nurture": {"score_crossed": ("mql",)},
    "disqualified": {},
}
AUTOMATIC: frozenset[tuple[Stage, Stage]] = frozenset({("lost", "nurture")})
TRANSITIONS: frozenset[tuple[Stage | None, Stage]] = frozenset(
    {(stage, to) for stage, moves in COMMANDS.items() for tos in moves.values() for to in tos}
    | AUTOMATIC
)
DISQUALIFYING_REASONS = frozenset({"spam", "duplicate", "competitor"})
SYSTEM = Actor(kind="system", id="qualification")
_CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class IllegalTransition(Exception):
    """The command is not allowed in the lead's current stage (HTTP 409)."""

    def __init__(self, stage: Stage | None, command: str) -> None:
        self.stage = stage
        self.command = command
        self.allowed: dict[Command, tuple[Stage, ...]] = dict(COMMANDS[stage])
        allowed = ", ".join(f"{c} -> {'|'.join(to)}" for c, to in self.allowed.items())
        super().__init__(
            f"cannot {command} a lead in stage {stage or '(none)'}; allowed: {allowed or 'nothing'}"
        )

    @property
    def allowed_commands(self) -> list[Command]:
        """The commands the current stage accepts."""
        return list(self.allowed)

    @property
    def allowed_stages(self) -> list[Stage]:
        """The stages reachable from the current stage."""
        return sorted({to for tos in self.allowed.values() for to in tos})


class NotQualified(Exception):
    """The score does not (yet) justify an MQL: below threshold, or inside the cooldown."""


class QualifyingScore(Protocol):
    """What the lifecycle reads from a score (`scoring.Score` is one)."""

    @property
    def total(self) -> float: ...
    @property
    def fit(self) -> float: ...
    @property
    def model_version(self) -> str: ...
    @property
    def qualifies_for_mql(self) -> bool: ...
    @property
    def last_engagement_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class LifecyclePolicy:
    """Configuration: how long a recycled lead must wait before new engagement counts."""

    recycle_cooldown: timedelta = timedelta(days=30)


@dataclass(frozen=True)
class Transition:
    """One recorded move between stages, with who made it and why."""

    from_stage: Stage | None
    to_stage: Stage
    command: Command | Literal["recycle"]
    actor: Actor
    reason: Reason
    at: datetime
    model_version: str | None = None
    bant_assessment_id: UUID | None = None
    amount: Decimal | None = None
    currency: str | None = None

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("transition times must be timezone-aware")

    def to_event(self, lead_id: UUID) -> LeadStageChanged:
        """The `lead.stage_changed` payload announcing this transition."""
        return LeadStageChanged(
            lead_id=lead_id,
            from_stage=self.from_stage,
            to_stage=self.to_stage,
            actor=self.actor,
            reason=self.reason,
            model_version=self.model_version,
            bant_assessment_id=self.bant_assessment_id,
        )


class Step(NamedTuple):
    """A command's result: the new lifecycle value and the transitions that led there."""

    lifecycle: LeadLifecycle
    transitions: tuple[Transition, ...]


@dataclass(frozen=True)
class LeadLifecycle:
    """A lead's place in the lifecycle; every command returns a new value."""

    stage: Stage | None = None
    entered_at: datetime | None = None
    recycled_at: datetime | None = None
    policy: LifecyclePolicy = field(default_factory=LifecyclePolicy)

    def allowed_commands(self) -> dict[Command, tuple[Stage, ...]]:
        """The commands the current stage accepts, with the stages each can lead to."""
        return dict(COMMANDS[self.stage])

    def capture(self, source: LeadSource, *, at: datetime, actor: Actor = SYSTEM) -> Step:
        """A new lead: marketing's start as `lead`, sales' own start as `sgl`."""
        to: Stage = "lead" if source == "marketing" else "sgl"
        reason = Reason(code="captured", text=f"captured from {source}")
        return self._take(Transition(self.stage, to, "capture", actor, reason, at))

    def mql_due(self, score: QualifyingScore) -> bool:
        """Whether `score_crossed` would make the lead an MQL now."""
        if "score_crossed" not in COMMANDS[self.stage]:
            return False
        try:
            self._check_qualifies(score)
        except NotQualified:
            return False
        return True

    def score_crossed(self, score: QualifyingScore, *, at: datetime) -> Step:
        """The score reached the MQL bar: lead -> mql, or nurture -> mql after the cooldown."""
        self._allow("score_crossed")
        self._check_qualifies(score)
        text = f"score {score.total:g}, fit {score.fit:g} (model {score.model_version})"
        if self.stage == "nurture":
            text = f"recycled: {text}"
        reason = Reason(code="score_threshold", text=text)
        return self._take(
            Transition(self.stage, "mql", "score_crossed", SYSTEM, reason, at, score.model_version)
        )

    def accept(self, actor: Actor, *, at: datetime, note: str = "") -> Step:
        """The owner takes the lead (go): mql/sgl -> sal."""
        reason = Reason(code="accepted", text=note)
        return self._take(Transition(self.stage, "sal", "accept", _identified(actor), reason, at))

    def reject(self, actor: Actor, reason_code: str, text: str = "", *, at: datetime) -> Step:
        """The owner declines (no go): back to nurture, or disqualified for spam and the like."""
        code = _code(reason_code)
        to: Stage = "disqualified" if code in DISQUALIFYING_REASONS else "nurture"
        reason = Reason(code=code, text=text)
        return self._take(Transition(self.stage, to, "reject", _identified(actor), reason, at))

    def bant_decided(
        self,
        passed: bool,
        unmet: Sequence[str],
        *,
        actor: Actor,
        at: datetime,
        assessment_id: UUID | None = None,
    ) -> Step:
        """A BANT assessment was decided: sal -> sql when it passed, else sal -> nurture."""
        code = "bant_passed" if passed else "bant_failed"
        reason = Reason(code=code, text=f"unmet criteria: {', '.join(unmet) or 'none'}")
        to: Stage = "sql" if passed else "nurture"
        transition = Transition(
            self.stage,
            to,
            "bant_decided",
            _identified(actor),
            reason,
            at,
            bant_assessment_id=assessment_id,
        )
        return self._take(transition)

    def won(self, actor: Actor, amount: Decimal, currency: str, *, at: datetime) -> Step:
        """The deal closed won: sql -> won."""
        amount, currency = _money(amount, currency)
        reason = Reason(code="won", text=f"{amount} {currency}")
        transition = Transition(
            self.stage,
            "won",
            "won",
            _identified(actor),
            reason,
            at,
            amount=amount,
            currency=currency,
        )
        return self._take(transition)

    def lost(self, actor: Actor, reason_code: str, text: str = "", *, at: datetime) -> Step:
        """The deal was lost: sql -> lost, then the system recycles it to nurture."""
        code = _code(reason_code)
        reason = Reason(code=code, text=text)
        lost, [lost_transition] = self._take(
            Transition(self.stage, "lost", "lost", _identified(actor), reason, at)
        )
        recycle = Reason(code="recycled", text=f"lost ({code}), back to nurture")
        back = Transition("lost", "nurture", "recycle", SYSTEM, recycle, at)
        return Step(lost.apply(back), (lost_transition, back))

    def apply(self, transition: Transition) -> LeadLifecycle:
        """The value after a recorded transition (used to replay history)."""
        if transition.from_stage != self.stage or (
            (transition.from_stage, transition.to_stage) not in TRANSITIONS
        ):
            raise IllegalTransition(self.stage, transition.command)
        recycled_at = transition.at if transition.to_stage == "nurture" else self.recycled_at
        return replace(
            self, stage=transition.to_stage, entered_at=transition.at, recycled_at=recycled_at
        )

    def _allow(self, command: Command) -> tuple[Stage, ...]:
        targets = COMMANDS[self.stage].get(command)
        if targets is None:
            raise IllegalTransition(self.stage, command)
        return targets

    def _take(self, transition: Transition) -> Step:
        if transition.command == "recycle" or (
            transition.to_stage not in self._allow(transition.command)
        ):
            raise IllegalTransition(self.stage, transition.command)
        return Step(self.apply(transition), (transition,))

    def _check_qualifies(self, score: QualifyingScore) -> None:
        if not score.qualifies_for_mql:
            raise NotQualified(f"score {score.total:g} (fit {score.fit:g}) is below the MQL bar")
        if self.stage == "nurture" and self.recycled_at is not None:
            after = self.recycled_at + self.policy.recycle_cooldown
            last = score.last_engagement_at
            if last is None or last < after:
                raise NotQualified(f"recycled lead: needs engagement after {after.isoformat()}")


def replay(
    transitions: Iterable[Transition], policy: LifecyclePolicy | None = None
) -> LeadLifecycle:
    """Rebuild a lead's lifecycle from its recorded transitions, checking every one."""
    lifecycle = LeadLifecycle(policy=policy or LifecyclePolicy())
    for transition in transitions:
        lifecycle = lifecycle.apply(transition)
    return lifecycle


def _identified(actor: Actor) -> Actor:
    if not actor.id.strip():
        raise ValueError("the actor needs an id")
    return actor


def _code(reason_code: str) -> str:
    code = reason_code.strip().lower()
    if not _CODE.match(code):
        raise ValueError(f"reason code {reason_code!r} must be a word like 'no_budget'")
    return code


def _money(amount: Decimal, currency: str) -> tuple[Decimal, str]:
    code = currency.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ValueError(f"currency {currency!r} must be an ISO 4217 code like 'EUR'")
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"amount {amount} must be a finite number >= 0")
    return amount, code

"""Scoring: apply a scoring model to a lead's profile and activities, with the explanation.

Pure and deterministic: the clock is an argument. Every contribution is rounded to
hundredths before it is summed, so the explanation adds up to the score exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property, partial
from typing import Any, Literal, NamedTuple

import orjson

from services.qualification.scoring_model import (
    ActivityPoints,
    Condition,
    Engagement,
    FitRule,
    NegativeSignal,
    Scalar,
    ScoringModel,
)

ContributionKind = Literal["fit", "engagement", "negative"]
DAY_SECONDS = 86_400.0


CLOCK_SKEW = timedelta(minutes=5)


class ActivityFact:
    """One thing the lead did, as scoring needs it. Read-only by convention: a plain class
    with slots and its derived values worked out once, as one is made for every stored
    activity of every lead a run of events scores."""

    __slots__ = ("activity_id", "activity_type", "event_id", "occurred_at", "order", "timestamp")

    def __init__(
        self,
        activity_id: str | None,  # ids as canonical UUID text, as stored and as events carry
        activity_type: str,
        occurred_at: datetime,
        event_id: str | None = None,
    ) -> None:
        self.activity_id = activity_id
        self.activity_type = activity_type
        self.occurred_at = occurred_at
        self.event_id = event_id
        # seconds since the epoch (decay is worked out from it)
        self.timestamp: float = _aware(occurred_at).timestamp()
        # where it comes in a history: by time, then type, then ids (a missing one first)
        self.order: tuple[datetime, str, str, str] = (
            occurred_at,
            activity_type,
            activity_id or "",
            event_id or "",
        )

    def _fields(self) -> tuple[str | None, str, datetime, str | None]:
        return (self.activity_id, self.activity_type, self.occurred_at, self.event_id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActivityFact) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"ActivityFact({self.activity_id!r}, {self.activity_type!r}, "
            f"{self.occurred_at!r}, {self.event_id!r})"
        )


@dataclass(frozen=True, slots=True, eq=False)
class Contribution:
    """One rule that fired, its points and why (the reason is worded when asked for)."""

    rule_id: str
    kind: ContributionKind
    points: float
    why: str | Callable[[], str]
    activity_id: str | None = None
    cause_event_id: str | None = None
    occurred_at: datetime | None = None
    capped: bool = False

    @property
    def reason(self) -> str:
        return self.why if isinstance(self.why, str) else self.why()

    def _key(self) -> tuple[Any, ...]:
        return (
            self.rule_id,
            self.kind,
            self.points,
            self.reason,
            self.activity_id,
            self.cause_event_id,
            self.occurred_at,
            self.capped,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Contribution) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class _Engaged(NamedTuple):
    """An activity that earned points: what its contribution is made of, when asked for."""

    fact: ActivityFact
    rule: ActivityPoints
    half_life: float | None
    decayed: float  # after decay, before the cap
    points: float  # what it counts


@dataclass(frozen=True)
class Score:
    """A lead's score under one model version, with every contribution that made it.

    Scoring runs once per event on a hot path: the engaged activities are kept in compact
    form, and become `Contribution`s (with their reasons) only when someone looks."""

    total: float
    fit: float
    engagement: float
    model_version: str
    qualifies_for_mql: bool
    mql_threshold: float
    min_fit: float
    last_engagement_at: datetime | None
    now: datetime
    fit_parts: tuple[Contribution, ...] = field(repr=False)
    engaged: tuple[_Engaged, ...] = field(repr=False)
    negative_parts: tuple[Contribution, ...] = field(repr=False)

    @cached_property
    def contributions(self) -> list[Contribution]:
        """Every rule that fired: fit, then engagement in time order, then negative signals."""
        engagement = [
            Contribution(
                e.fact.activity_type,
                "engagement",
                e.points,
                partial(
                    _engagement_reason,
                    e.fact,
                    e.rule,
                    e.half_life,
                    e.decayed,
                    self.now,
                    e.points < e.decayed,
                ),
                e.fact.activity_id,
                e.fact.event_id,
                e.fact.occurred_at,
                e.points < e.decayed,
            )
            for e in self.engaged
        ]
        return [*self.fit_parts, *engagement, *self.negative_parts]

    def explanation(self) -> list[dict[str, Any]]:
        """The contributions as `lead.scored` carries them (`ScoreContribution` fields) and as
        they are stored: one JSON object per contribution."""
        return [
            *(
                {"rule_id": c.rule_id, "points": c.points, "cause_event_id": None}
                for c in self.fit_parts
            ),
            *(
                {
                    "rule_id": e.fact.activity_type,
                    "points": e.points,
                    "cause_event_id": e.fact.event_id,
                }
                for e in self.engaged
            ),
            *(
                {"rule_id": c.rule_id, "points": c.points, "cause_event_id": c.cause_event_id}
                for c in self.negative_parts
            ),
        ]


def score(
    model: ScoringModel,
    profile: Mapping[str, Any],
    activities: Sequence[ActivityFact],
    *,
    now: datetime,
    ordered: bool = False,
    fit_parts: Sequence[Contribution] | None = None,
) -> Score:
    """Score a lead: fit from its profile, decayed and capped engagement from its activities.

    For a caller scoring one lead many times: `ordered` says the activities are as
    `chronological` returns them (kept so, rather than sorted every time), and `fit_parts`
    is what `fit_contributions(model, profile)` returned for this very model and profile."""
    now = _aware(now)
    # Not yet happened (beyond clock skew): it counts once it has, not before (so a
    # future-dated activity can neither dodge decay nor a recycled lead's cooldown).
    horizon = now + CLOCK_SKEW
    history = activities if ordered else chronological(activities)
    facts = [f for f in history if f.occurred_at <= horizon]
    if fit_parts is None:
        fit_parts = fit_contributions(model, profile)
    engaged = _engagement(model.engagement, facts, now)
    negative = list(_negative_activities(model.negative_signals, facts))
    fit = _sum(fit_parts)
    engagement = round(sum([*(e.points for e in engaged), *(c.points for c in negative)]), 2)
    total = round(fit + engagement, 2)
    counted = [e.fact.occurred_at for e in engaged if e.points > 0]
    return Score(
        total=total,
        fit=fit,
        engagement=engagement,
        model_version=model.version,
        qualifies_for_mql=total >= model.mql_threshold and fit >= model.min_fit,
        mql_threshold=model.mql_threshold,
        min_fit=model.min_fit,
        last_engagement_at=max(counted, default=None),
        now=now,
        fit_parts=tuple(fit_parts),
        engaged=tuple(engaged),
        negative_parts=tuple(negative),
    )


@dataclass(frozen=True)
class LiveHistory:
    """Which of a lead's stored activities can still change its score under a model: every
    activity of `always` types (undecaying engagement, negative signals), and any activity
    younger than `max_age`, beyond which every decaying type's points round to zero. The
    others need not be read: leaving them out gives the same score, exactly."""

    always: frozenset[str]
    max_age: timedelta | None  # None: no type decays to nothing, read everything

    def since(self, now: datetime) -> datetime | None:
        """The oldest moment that still counts for a score at `now` (None: all of them)."""
        return None if self.max_age is None else now - self.max_age


def live_history(model: ScoringModel) -> LiveHistory:
    """What of a history `score` can still use under `model` (see `LiveHistory`)."""
    engagement = model.engagement
    always = {s.activity_type for s in model.negative_signals if s.activity_type}
    ages = []
    for activity_type, rule in engagement.activities.items():
        half_life = engagement.half_life(activity_type)
        if half_life is None:
            always.add(activity_type)
        else:  # points * 0.5 ** (age / half_life) < 0.004 rounds to 0.00 (with a margin)
            ages.append(half_life * max(math.log2(rule.points / 0.004), 0.0) + 1)
    max_age = timedelta(days=max(ages)) if ages else None
    return LiveHistory(frozenset(always), max_age if ages else None)


def _decay(age_seconds: float, half_life_days: float | None) -> float:
    """How much of an activity's points are left after `age_seconds` (1.0 without a
    half-life)."""
    if half_life_days is None:
        return 1.0
    return float(0.5 ** (max(age_seconds, 0.0) / DAY_SECONDS / half_life_days))


_FIT_MEMO_SIZE = 50_000
_fit_memo: dict[tuple[int, bytes], tuple[ScoringModel, list[Contribution]]] = {}


def fit_contributions(model: ScoringModel, profile: Mapping[str, Any]) -> list[Contribution]:
    """The profile rules that fire, remembered per (model, profile content): a lead's profile
    changes rarely, its activities often, and the fit rules are the costly part of a score."""
    try:
        key = (id(model), orjson.dumps(profile, option=orjson.OPT_SORT_KEYS))
    except TypeError:  # not plain JSON data: worked out every time
        return list(_fit(model, profile))
    cached = _fit_memo.get(key)
    if cached is not None and cached[0] is model:
        return cached[1]
    if len(_fit_memo) >= _FIT_MEMO_SIZE:
        _fit_memo.clear()
    parts = list(_fit(model, profile))
    _fit_memo[key] = (model, parts)
    return parts


def _fit(model: ScoringModel, profile: Mapping[str, Any]) -> Iterable[Contribution]:
    rules: list[tuple[FitRule | NegativeSignal, ContributionKind]] = [
        *((rule, "fit") for rule in model.fit_rules),
        *((s, "negative") for s in model.negative_signals if s.activity_type is None),
    ]
    for rule, kind in rules:
        if (reason := matches(rule, profile)) is not None:
            yield Contribution(rule.id, kind, round(rule.points, 2), reason)


def _negative_activities(
    signals: Sequence[NegativeSignal], facts: Sequence[ActivityFact]
) -> Iterable[Contribution]:
    # A negative activity counts once, however often it happened: the latest is the cause.
    if not signals:
        return
    latest = {f.activity_type: f for f in facts}
    for signal in signals:
        fact = latest.get(signal.activity_type or "")
        if fact is not None and signal.activity_type is not None:
            reason = f"{fact.activity_type} on {_day(fact.occurred_at)}"
            yield _from_fact(signal.id, "negative", round(signal.points, 2), reason, fact)


def _engagement(
    engagement: Engagement, facts: Sequence[ActivityFact], now: datetime
) -> list[_Engaged]:
    # Caps hold for every rolling window (start, start + window_days]: checking the window
    # that ends at each activity, in chronological order, is enough to guarantee that. For
    # each activity type: the times and points counted so far, and where its window begins.
    plan = _plan(engagement)
    new_engaged = tuple.__new__  # what `_Engaged._make` does, without its Python frame
    # per type: times, points, [where its window begins, all points counted so far]
    counted: dict[str, tuple[list[float], list[float], list[Any]]] = {}
    engaged = []
    now_s = now.timestamp()
    for fact in facts:
        entry = plan.get(fact.activity_type)
        if entry is None:
            continue
        rule, half_life, cap, window = entry
        at = fact.timestamp
        decayed = round(rule.points * _decay(now_s - at, half_life), 2)
        if decayed <= 0:
            continue  # decayed away: no longer part of the score, nor of any cap
        points = decayed
        if cap is not None:
            state = counted.get(fact.activity_type)
            if state is None:
                state = counted[fact.activity_type] = ([], [], [0, 0.0])
            times, earned, first = state
            # the window's points are part of all points so far (none is negative): when all
            # of them leave room for this one, so does the window (it need not be summed)
            if round(cap - first[1], 2) < decayed:
                if window is not None:
                    while first[0] < len(times) and times[first[0]] <= at - window:
                        first[0] += 1
                room = round(cap - sum(earned[first[0] :]), 2)
                points = max(min(decayed, room), 0.0)
            times.append(at)
            earned.append(points)
            first[1] += points
        engaged.append(new_engaged(_Engaged, (fact, rule, half_life, decayed, points)))
    return engaged


_Plan = dict[str, tuple[ActivityPoints, float | None, float | None, float | None]]
_plans: dict[int, tuple[Engagement, _Plan]] = {}


def _plan(engagement: Engagement) -> _Plan:
    """Per scored activity type: its rule, half-life, cap and cap window (in seconds), worked
    out once per model."""
    cached = _plans.get(id(engagement))
    if cached is None or cached[0] is not engagement:
        if len(_plans) > 1000:
            _plans.clear()
        plan = {
            activity_type: (
                rule,
                engagement.half_life(activity_type),
                rule.cap,
                rule.window_days * DAY_SECONDS if rule.window_days else None,
            )
            for activity_type, rule in engagement.activities.items()
        }
        cached = _plans[id(engagement)] = (engagement, plan)
    return cached[1]


def _engagement_reason(
    fact: ActivityFact,
    rule: ActivityPoints,
    half_life: float | None,
    decayed: float,
    now: datetime,
    capped: bool,
) -> str:
    reason = f"{fact.activity_type} on {_day(fact.occurred_at)}: {_num(rule.points)} pts"
    if half_life is not None and decayed != round(rule.points, 2):
        age_days = max((now - fact.occurred_at).total_seconds(), 0.0) / DAY_SECONDS
        reason += f", {age_days:.1f} days old (half-life {_num(half_life)} d) -> {_num(decayed)}"
    if capped:
        per = f"per {_num(rule.window_days)} days" if rule.window_days else "in total"
        reason += f"; capped at {_num(rule.cap)} {per}"
    return reason


def matches(condition: Condition, profile: Mapping[str, Any]) -> str | None:
    """The reason text when the attribute test holds for the profile, else None."""
    name = condition.attribute or ""
    if condition.operator == "freemail":
        return _freemail(condition, profile)
    items = [v for v in _items(_lookup(profile, name)) if not _blank(v)]
    for item in items:
        if (reason := _test(condition, name, item)) is not None:
            return reason
    return None


def _test(condition: Condition, name: str, item: Any) -> str | None:
    fold = not condition.case_sensitive
    if condition.operator == "exists":
        return f"{name} is set ({_show(item)})"
    expected = condition.value
    if condition.operator == "equals" and expected is not None and _same(item, expected, fold):
        return f"{name} {_show(item)} equals {_show(expected)}"
    listed = condition.values or []
    if condition.operator == "in" and any(_same(item, v, fold) for v in listed):
        return f"{name} {_show(item)} in {_listing(listed)}"
    if condition.operator == "range":
        return _in_range(name, item, condition.min, condition.max)
    if condition.operator == "pattern" and condition.pattern and isinstance(item, str):
        flags = 0 if condition.case_sensitive else re.IGNORECASE
        if re.search(condition.pattern, item, flags):
            return f"{name} {_show(item)} matches /{condition.pattern}/"
    return None


def _in_range(name: str, item: Any, low: float | None, high: float | None) -> str | None:
    number = _number(item)
    if number is None or (low is not None and number < low):
        return None
    if high is not None and number > high:
        return None
    if low is not None and high is not None:
        return f"{name} {_num(number)} in [{_num(low)}, {_num(high)}]"
    if low is not None:
        return f"{name} {_num(number)} >= {_num(low)}"
    return f"{name} {_num(number)} <= {_num(high or 0)}"


def _freemail(condition: Condition, profile: Mapping[str, Any]) -> str | None:
    # Intake classifies the address from maintained lists; `values` adds local free mailers.
    if str(profile.get("email_kind") or "") == "freemail":
        return "email_kind is freemail (a free mailbox, not a company address)"
    domain = str(profile.get("email_domain") or "").casefold()
    listed = {str(v).casefold() for v in condition.values or ()}
    suffixes = {".".join(domain.split(".")[i:]) for i in range(domain.count(".") + 1)}
    if domain and listed & suffixes:
        return f"email_domain {domain} is listed as free mail"
    return None


def _lookup(profile: Mapping[str, Any], name: str) -> Any:
    value: Any = profile
    for part in name.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple | set | frozenset) else [value]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _same(item: Any, expected: Scalar, fold: bool) -> bool:
    if isinstance(item, str) or isinstance(expected, str):
        left, right = str(item).strip(), str(expected).strip()
        return left.casefold() == right.casefold() if fold else left == right
    if isinstance(item, bool) != isinstance(expected, bool):
        return False  # True == 1 in Python, but not in a scoring rule
    return bool(item == expected)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN is no number


def chronological(activities: Sequence[ActivityFact]) -> list[ActivityFact]:
    """Activities in the order scoring takes them (`ActivityFact.order`), each once: order
    must not depend on how the caller listed them, and a redelivered activity counts once."""
    facts = sorted(
        (
            a
            if a.occurred_at.tzinfo
            else ActivityFact(a.activity_id, a.activity_type, _aware(a.occurred_at), a.event_id)
            for a in activities
        ),
        key=in_order,
    )
    unique: dict[str | int, ActivityFact] = {}
    for index, fact in enumerate(facts):
        unique.setdefault(fact.activity_id or index, fact)
    return list(unique.values())


def in_order(fact: ActivityFact) -> tuple[datetime, str, str, str]:
    """The sort key of `chronological` (for keeping a history in order with `bisect`)."""
    return fact.order


def _from_fact(
    rule_id: str,
    kind: ContributionKind,
    points: float,
    reason: str | Callable[[], str],
    fact: ActivityFact,
    capped: bool = False,
) -> Contribution:
    return Contribution(
        rule_id, kind, points, reason, fact.activity_id, fact.event_id, fact.occurred_at, capped
    )


def _sum(parts: Iterable[Contribution]) -> float:
    return round(sum(p.points for p in parts), 2)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _num(value: float | None) -> str:
    return f"{value or 0:.2f}".rstrip("0").rstrip(".")


def _show(value: Any) -> str:
    return _num(value) if isinstance(value, float) else str(value)


def _listing(values: Sequence[Scalar]) -> str:
    if len(values) > 6:
        return f"the {len(values)} listed values"
    return "[" + ", ".join(str(v) for v in values) + "]"

"""Scoring: every operator, decay, caps, negative signals and the explanation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.qualification.lead_state import LeadState, scored_event
from services.qualification.lifecycle import LeadLifecycle, LifecyclePolicy
from services.qualification.scoring import ActivityFact, Score, live_history, score
from services.qualification.scoring_model import ScoringModel, default_model
from shared.events.payloads import LeadScored

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def model(**fields: Any) -> ScoringModel:
    return ScoringModel.model_validate({"version": "t-1", "mql_threshold": 50, **fields})


def fit_model(**rule: Any) -> ScoringModel:
    return model(fit_rules=[{"id": "r", "points": 10, **rule}])


def rule(rule_id: str, attribute: str, operator: str, points: float, **operands: Any) -> Any:
    return {
        "id": rule_id,
        "attribute": attribute,
        "operator": operator,
        "points": points,
    } | operands


def fact(activity_type: str, days_ago: float = 0, **ids: str) -> ActivityFact:
    return ActivityFact(
        activity_id=ids.get("activity_id", str(uuid.uuid4())),
        activity_type=activity_type,
        occurred_at=NOW - timedelta(days=days_ago),
        event_id=ids.get("event_id", str(uuid.uuid4())),
    )


def reasons(result: Score) -> list[str]:
    return [c.reason for c in result.contributions]


def test_equals_fires_ignoring_case_and_explains_itself() -> None:
    rules = fit_model(attribute="industry", operator="equals", value="Software")

    assert reasons(score(rules, {"industry": "software"}, [], now=NOW)) == [
        "industry software equals Software"
    ]
    assert score(rules, {"industry": "retail"}, [], now=NOW).fit == 0


def test_equals_can_be_case_sensitive_and_never_takes_true_for_one() -> None:
    exact = fit_model(attribute="industry", operator="equals", value="SaaS", case_sensitive=True)
    flag = fit_model(attribute="custom.partner", operator="equals", value=True)

    assert score(exact, {"industry": "saas"}, [], now=NOW).fit == 0
    assert score(flag, {"custom": {"partner": 1}}, [], now=NOW).fit == 0
    assert score(flag, {"custom": {"partner": True}}, [], now=NOW).fit == 10


def test_in_fires_when_the_value_or_one_of_several_values_is_listed() -> None:
    rules = fit_model(attribute="seniority", operator="in", values=["director", "vp"])

    assert reasons(score(rules, {"seniority": "vp"}, [], now=NOW)) == [
        "seniority vp in [director, vp]"
    ]
    assert score(rules, {"seniority": ["mid", "director"]}, [], now=NOW).fit == 10
    assert score(rules, {"seniority": "manager"}, [], now=NOW).fit == 0


def test_range_includes_both_bounds() -> None:
    rules = fit_model(attribute="company_size", operator="range", min=100, max=1000)

    assert reasons(score(rules, {"company_size": 250}, [], now=NOW)) == [
        "company_size 250 in [100, 1000]"
    ]
    fired = [score(rules, {"company_size": n}, [], now=NOW).fit for n in (99, 100, 1000, 1001)]
    assert fired == [0, 10, 10, 0]


def test_open_ended_ranges_need_one_bound_only() -> None:
    at_least = fit_model(attribute="company_size", operator="range", min=1000)
    at_most = fit_model(attribute="company_size", operator="range", max=9)

    assert reasons(score(at_least, {"company_size": 50_000}, [], now=NOW)) == [
        "company_size 50000 >= 1000"
    ]
    assert reasons(score(at_most, {"company_size": 3}, [], now=NOW)) == ["company_size 3 <= 9"]
    assert score(at_most, {"company_size": 10}, [], now=NOW).fit == 0


def test_range_reads_numbers_written_as_text_and_skips_anything_else() -> None:
    rules = fit_model(attribute="company_size", operator="range", min=100)

    assert score(rules, {"company_size": "250"}, [], now=NOW).fit == 10
    for value in ("many", True, None, float("nan")):
        assert score(rules, {"company_size": value}, [], now=NOW).fit == 0


def test_exists_fires_only_for_a_non_blank_value() -> None:
    rules = fit_model(attribute="job_title", operator="exists")

    assert reasons(score(rules, {"job_title": "CFO"}, [], now=NOW)) == ["job_title is set (CFO)"]
    for profile in ({}, {"job_title": None}, {"job_title": "  "}):
        assert score(rules, profile, [], now=NOW).fit == 0


def test_pattern_searches_anywhere_ignoring_case_unless_told_otherwise() -> None:
    loose = fit_model(attribute="job_title", operator="pattern", pattern=r"\bstudent\b")
    strict = fit_model(
        attribute="job_title", operator="pattern", pattern=r"^CTO$", case_sensitive=True
    )

    assert reasons(score(loose, {"job_title": "PhD Student"}, [], now=NOW)) == [
        r"job_title PhD Student matches /\bstudent\b/"
    ]
    assert score(loose, {"job_title": "Studentenwerk"}, [], now=NOW).fit == 0
    assert score(strict, {"job_title": "cto"}, [], now=NOW).fit == 0
    assert score(strict, {"job_title": "CTO"}, [], now=NOW).fit == 10


def test_freemail_fires_for_free_mailboxes_and_extra_listed_domains() -> None:
    rules = fit_model(attribute="email_kind", operator="freemail", values=["web.example"])

    freemail = score(rules, {"email_kind": "freemail", "email_domain": "gmail.com"}, [], now=NOW)
    listed = score(rules, {"email_kind": "business", "email_domain": "mx.web.example"}, [], now=NOW)
    business = score(rules, {"email_kind": "business", "email_domain": "acme.com"}, [], now=NOW)

    assert reasons(freemail) == ["email_kind is freemail (a free mailbox, not a company address)"]
    assert reasons(listed) == ["email_domain mx.web.example is listed as free mail"]
    assert business.fit == 0


def test_an_activity_one_half_life_old_gives_half_its_points() -> None:
    rules = model(engagement={"half_life_days": 30, "activities": {"form_submit": {"points": 10}}})

    result = score(rules, {}, [fact("form_submit", days_ago=30)], now=NOW)

    assert result.engagement == 5
    assert "30.0 days old (half-life 30 d) -> 5" in result.contributions[0].reason


def test_a_type_can_decay_at_its_own_pace_and_no_half_life_means_no_decay() -> None:
    activities = {"demo_request": {"points": 40, "half_life_days": 60}, "page_view": {"points": 2}}
    decaying = model(engagement={"half_life_days": 30, "activities": activities})
    lasting = model(engagement={"activities": activities | {"demo_request": {"points": 40}}})
    history = [fact("demo_request", days_ago=60), fact("page_view", days_ago=30)]

    assert [c.points for c in score(decaying, {}, history, now=NOW).contributions] == [20, 1]
    assert [c.points for c in score(lasting, {}, history, now=NOW).contributions] == [40, 2]


def test_a_cap_per_type_counts_activities_in_time_order_and_marks_the_capped_ones() -> None:
    rules = model(engagement={"activities": {"pricing_page_view": {"points": 4, "cap": 10}}})
    history = [fact("pricing_page_view", days_ago=d) for d in (1, 4, 2, 3)]  # listed out of order

    result = score(rules, {}, history, now=NOW)

    assert [c.points for c in result.contributions] == [4, 4, 2, 0]
    assert [c.capped for c in result.contributions] == [False, False, True, True]
    assert [c.occurred_at for c in result.contributions] == sorted(f.occurred_at for f in history)
    assert result.contributions[2].reason.endswith("; capped at 10 in total")
    assert result.engagement == 10


def test_a_cap_per_window_frees_up_as_the_window_rolls_on() -> None:
    page_view = {"points": 1, "cap": 2, "window_days": 7}
    rules = model(engagement={"activities": {"page_view": page_view}})
    history = [fact("page_view", days_ago=d) for d in (20, 19.5, 19, 10, 9, 8.5)]

    result = score(rules, {}, history, now=NOW)

    assert [c.points for c in result.contributions] == [1, 1, 0, 1, 1, 0]
    assert "capped at 2 per 7 days" in result.contributions[2].reason


def test_a_redelivered_activity_counts_once() -> None:
    rules = model(engagement={"activities": {"form_submit": {"points": 10}}})
    once = fact("form_submit")

    assert score(rules, {}, [once, once], now=NOW).engagement == 10


def test_negative_activity_counts_once_and_names_the_latest_as_cause() -> None:
    rules = model(
        negative_signals=[{"id": "unsub", "activity_type": "email_unsubscribe", "points": -20}]
    )
    earlier, latest = fact("email_unsubscribe", days_ago=9), fact("email_unsubscribe", days_ago=2)

    result = score(rules, {}, [latest, earlier], now=NOW)

    assert result.engagement == -20
    [signal] = result.contributions
    assert (signal.rule_id, signal.kind, signal.cause_event_id) == (
        "unsub",
        "negative",
        latest.event_id,
    )


def test_negative_conditions_lower_fit_for_competitors_and_students() -> None:
    signals = [
        rule("competitor", "email_domain", "in", -100, values=["rival.example"]),
        rule("student", "job_title", "pattern", -25, pattern="student|intern"),
    ]
    rules = model(negative_signals=signals)

    result = score(rules, {"email_domain": "rival.example", "job_title": "Intern"}, [], now=NOW)

    assert (result.fit, result.engagement, result.total) == (-125, 0, -125)
    assert [c.rule_id for c in result.contributions] == ["competitor", "student"]


def test_explanation_lists_exactly_the_rules_that_fired_and_adds_up_to_the_total() -> None:
    lead = {"email_kind": "business", "company_size": 300, "seniority": "vp", "job_title": "VP IT"}
    history = [fact("webinar_attended", 45), *(fact("pricing_page_view", d) for d in (1, 2, 3))]

    result = score(default_model(), lead, history, now=NOW)

    fired = [c.rule_id for c in result.contributions]
    fit = ["business_email", "company_size_mid", "decision_maker", "job_title_given"]
    assert fired == [*fit, "webinar_attended", *["pricing_page_view"] * 3]
    assert result.contributions[-1].capped
    assert round(sum(c.points for c in result.contributions), 2) == result.total
    assert result.total == round(result.fit + result.engagement, 2)


def test_an_mql_needs_both_the_threshold_and_the_minimum_fit() -> None:
    rules = model(
        mql_threshold=20,
        min_fit=10,
        fit_rules=[rule("vp", "seniority", "equals", 10, value="vp")],
        engagement={"activities": {"demo_request": {"points": 30}}},
    )

    assert score(rules, {"seniority": "vp"}, [fact("demo_request")], now=NOW).qualifies_for_mql
    assert not score(rules, {}, [fact("demo_request")], now=NOW).qualifies_for_mql
    assert not score(rules, {"seniority": "vp"}, [], now=NOW).qualifies_for_mql


def test_a_hand_raiser_with_a_business_email_is_an_mql_under_the_default_model() -> None:
    request = fact("demo_request")

    result = score(default_model(), {"email_kind": "business"}, [request], now=NOW)

    assert result.qualifies_for_mql
    assert (result.model_version, result.last_engagement_at) == ("default-1", request.occurred_at)
    assert result.explanation()[-1]["cause_event_id"] == request.event_id


activity_types = st.sampled_from(["page_view", "pricing_page_view", "email_unsubscribe", "other"])
histories = st.lists(
    st.builds(fact, activity_types, st.floats(min_value=-1, max_value=120)), max_size=40
)


def assert_every_window_within_its_cap(result: Score, rules: ScoringModel) -> None:
    for activity_type, rule in rules.engagement.activities.items():
        parts = [c for c in result.contributions if c.rule_id == activity_type]
        window = timedelta(days=rule.window_days or 100_000)
        for last in parts:
            assert last.occurred_at
            inside = [
                c.points
                for c in parts
                if c.occurred_at and last.occurred_at - window < c.occurred_at <= last.occurred_at
            ]
            assert round(sum(inside), 2) <= (rule.cap or float("inf"))


@given(histories, st.randoms())
def test_scores_add_up_keep_within_caps_and_ignore_the_order_activities_come_in(
    history: list[ActivityFact], rnd: Any
) -> None:
    rules, lead = default_model(), {"email_kind": "business"}

    result = score(rules, lead, history, now=NOW)

    assert score(rules, lead, rnd.sample(history, len(history)), now=NOW) == result
    assert round(sum(c.points for c in result.contributions), 2) == result.total
    assert_every_window_within_its_cap(result, rules)


def test_a_remembered_fit_follows_the_profile_and_the_model() -> None:
    sizes = model(fit_rules=[rule("big", "company_size", "range", 20, min=200)])
    stricter = model(fit_rules=[rule("big", "company_size", "range", 20, min=1000)])
    profile: dict[str, Any] = {"company_size": 400}

    first = score(sizes, profile, [], now=NOW).fit
    profile["company_size"] = 50  # the same dict, changed: what was remembered must not stay
    assert (first, score(sizes, profile, [], now=NOW).fit) == (20, 0)
    assert score(stricter, {"company_size": 400}, [], now=NOW).fit == 0
    assert score(sizes, {"company_size": 400}, [], now=NOW).fit == 20


def test_the_scored_event_encoded_on_the_hot_path_is_what_the_model_would_encode() -> None:
    rules = default_model()
    history = [fact("page_view", 1), fact("demo_request", 0.5), fact("email_unsubscribe")]
    result = score(rules, {"email_kind": "business", "company_size": 400}, history, now=NOW)
    lead = LeadState(str(uuid.uuid4()), LeadLifecycle(policy=LifecyclePolicy()), None, 7.5, None)

    encoded = scored_event(lead, result)
    expected = LeadScored(
        lead_id=uuid.UUID(lead.lead_id),
        score=result.total,
        delta=round(result.total - 7.5, 2),
        fit=result.fit,
        engagement=result.engagement,
        model_version=rules.version,
        explanation=result.explanation(),
    )

    assert encoded.model is LeadScored
    assert LeadScored.model_validate_json(encoded.data) == expected
    assert len(expected.explanation) == len(result.contributions) == 5


long_histories = st.lists(
    st.builds(
        fact,
        st.sampled_from(["page_view", "demo_request", "email_unsubscribe", "trial_signup", "x"]),
        st.floats(min_value=0, max_value=2000),
    ),
    max_size=30,
)


@given(long_histories, st.floats(min_value=0, max_value=400))
def test_activities_beyond_the_live_history_never_change_a_score(
    history: list[ActivityFact], later_days: float
) -> None:
    rules, lead = default_model(), {"email_kind": "business"}
    live = live_history(rules)
    read_at, now = NOW, NOW + timedelta(days=later_days)  # read once, scored later too
    since = live.since(read_at)
    assert since is not None  # the default model's engagement decays
    kept = [f for f in history if f.occurred_at >= since or f.activity_type in live.always]

    full, pruned = score(rules, lead, history, now=now), score(rules, lead, kept, now=now)

    assert (pruned.total, pruned.explanation()) == (full.total, full.explanation())
    assert pruned.last_engagement_at == full.last_engagement_at


def test_the_live_history_of_the_default_model() -> None:
    live = live_history(default_model())

    assert live.always == {"email_unsubscribe", "email_bounce"}  # negative signals: no decay
    assert live.max_age is not None and timedelta(days=700) < live.max_age < timedelta(days=900)

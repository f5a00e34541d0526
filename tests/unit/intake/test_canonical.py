"""The canonical lead's own readings of what sources send."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.intake.canonical import ActivityIn, LeadIn


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (250, 250),
        ("250", 250),
        ("1,000", 1000),
        ("25-50", 25),  # HubSpot's `numemployees` pick-list: a band is its lower bound
        ("1000+", 1000),
        ("10,001+", 10001),
        ("51 to 200", 51),
        ("1 \u2013 10", 1),
    ],
)
def test_a_company_size_is_read_from_a_number_or_a_headcount_band(
    given: int | str, stored: int
) -> None:
    assert LeadIn(company_size=given).company_size == stored


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("about fifty", "valid integer"),
        ("50-25", "ends below where it starts"),
        ("0-5", "greater than or equal to 1"),
    ],
)
def test_a_company_size_that_is_no_headcount_is_refused_saying_why(given: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says) as refused:
        LeadIn(company_size=given)
    assert refused.value.errors()[0]["loc"] == ("company_size",)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ({"seniority": "Director"}, ("director", None)),
        ({"seniority": "Vice President"}, ("vp", None)),
        ({"seniority": "C-Level", "channel": "Web Form"}, ("c_level", "web_form")),
        ({"channel": "COLD-CALL"}, (None, "cold_call")),
    ],
)
def test_pick_list_values_are_read_as_files_and_platforms_write_them(
    given: dict[str, str], stored: tuple[str | None, str | None]
) -> None:
    lead = LeadIn.model_validate({"email": "a@acme.com", **given})
    assert (lead.seniority, lead.channel) == stored


def test_a_pick_list_value_that_is_none_of_its_choices_is_still_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        LeadIn.model_validate({"email": "a@acme.com", "seniority": "Grand Vizier"})
    assert refused.value.errors()[0]["loc"] == ("seniority",)
    assert "'director'" in refused.value.errors()[0]["msg"]  # (the choices are named)


def test_an_activity_type_is_read_as_platforms_write_it() -> None:
    activity = ActivityIn.model_validate({"activity_type": "Pricing Page View", "email": "a@b.co"})
    assert activity.activity_type == "pricing_page_view"

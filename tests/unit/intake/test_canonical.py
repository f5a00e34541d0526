"""The canonical lead's own readings of what sources send."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.intake.canonical import LeadIn


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

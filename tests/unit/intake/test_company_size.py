"""A company size is a whole number of employees, however a file or a platform writes it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.intake.canonical import LeadIn, headcount


@pytest.mark.parametrize(
    ("given", "employees"),
    [
        ("1.000", 1000),  # a European export's thousands separator
        ("10.000", 10_000),
        ("1.000.000", 1_000_000),
        ("10,000", 10_000),
        ("1 000", 1000),
        ("1\u00a0000", 1000),  # a no-break space
        ("1\u202f000", 1000),  # a narrow no-break space (French)
        ("250", 250),
        ("250.0", 250),  # a spreadsheet's whole number
        ("1.000 - 5.000", 1000),
        ("10.001+", 10_001),
    ],
)
def test_a_headcount_reads_the_usual_written_forms_of_a_whole_number(
    given: str, employees: int
) -> None:
    assert headcount(given) == employees


@pytest.mark.parametrize(
    "given", ["1.5", "1,5", "-5", "12 34", "1,000.000", "1.000,000", "about fifty"]
)
def test_a_headcount_that_is_no_whole_number_is_refused_saying_what_would_do(given: str) -> None:
    with pytest.raises(ValueError, match="whole number of employees") as refused:
        headcount(given)

    assert repr(given) in str(refused.value)


@pytest.mark.parametrize(("given", "says"), [(True, "not true"), (False, "not false")])
def test_a_company_size_of_true_or_false_is_refused_not_taken_for_one(
    given: bool, says: str
) -> None:
    with pytest.raises(ValidationError, match=says) as refused:
        LeadIn(company_size=given)

    assert refused.value.errors()[0]["loc"] == ("company_size",)


def test_a_company_size_given_as_a_number_must_be_whole() -> None:
    with pytest.raises(ValidationError, match=r"whole number of employees, not 1\.5") as refused:
        LeadIn(company_size=1.5)

    assert refused.value.errors()[0]["loc"] == ("company_size",)
    assert LeadIn(company_size=250.0).company_size == 250
    assert LeadIn(company_size="1.000").company_size == 1000


@pytest.mark.parametrize("given", [-3, "-3"])
def test_a_negative_company_size_is_refused(given: int | str) -> None:
    with pytest.raises(ValidationError) as refused:
        LeadIn(company_size=given)

    assert refused.value.errors()[0]["loc"] == ("company_size",)

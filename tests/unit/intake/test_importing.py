"""Import parsing: rows stream in, errors carry line numbers, long lines are bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.intake import importing
from services.intake.import_job import ImportSummary
from services.intake.importing import RowError


async def chunks_of(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):  # tiny chunks: rows straddle chunk borders
        yield data[start : start + size]


async def parse(data: bytes, fmt: str) -> list[importing.ParsedRow]:
    return [row async for row in importing.parse(chunks_of(data), fmt)]


async def test_a_stray_quote_inside_an_unquoted_csv_cell_is_just_a_character() -> None:
    rows = await parse(
        b'email,company\r\na@x.com,Acme 5" Screens\r\nb@x.com,B\r\nc@x.com,C\r\n', "csv"
    )
    assert [r.lead.email for r in rows if r.lead] == ["a@x.com", "b@x.com", "c@x.com"]


async def test_a_quoted_csv_field_may_span_lines_and_keeps_its_first_line_number() -> None:
    rows = await parse(b'email,company\n"a@x.com","Acme\nNorth ""Ltd"""\nnot-an-email,X\n', "csv")
    assert rows[0].lead is not None and rows[0].lead.fields["company"] == 'Acme\nNorth "Ltd"'
    assert [(e.line, e.field) for e in rows[1].errors] == [(4, "email")]


async def test_a_quoted_field_with_text_that_is_not_utf8_is_one_error_at_its_first_line() -> None:
    data = 'email,company\na@x.com,"first line\nZürich office\nsays ""hi"", then"\nb@x.com,ok\n'
    rows = await parse(data.encode("cp1252"), "csv")
    assert [(e.line, e.field) for r in rows for e in r.errors] == [(2, "row")]
    assert [r.lead.email for r in rows if r.lead] == ["b@x.com"]


async def test_a_utf8_bom_and_crlf_line_ends_are_tolerated() -> None:
    rows = await parse(b'\xef\xbb\xbf{"email": "a@x.com"}\r\n{"email": "b@x.com"}', "ndjson")
    assert [r.lead.email for r in rows if r.lead] == ["a@x.com", "b@x.com"]


async def test_an_overlong_line_is_reported_without_being_kept() -> None:
    huge = b'{"email": "a@x.com", "company": "' + b"x" * 1_100_000 + b'"}\n{"email": "b@x.com"}\n'
    rows = await parse(huge, "ndjson")
    assert rows[0].errors[0].reason.startswith("line longer than")
    assert rows[1].lead is not None and rows[1].lead.email == "b@x.com"


@pytest.mark.parametrize("size", [1, 2, 7, 4096])
async def test_a_csv_with_classic_mac_line_ends_reads_each_cr_as_a_line_end(size: int) -> None:
    data = b'email,company\ra@x.com,"Acme\rNorth"\r\rnot-an-email,X\rb@x.com,B\r'
    rows = [row async for row in importing.parse(chunks_of(data, size), "csv")]
    assert [(r.line, r.lead.email if r.lead else None) for r in rows] == [
        (2, "a@x.com"),
        (5, None),
        (6, "b@x.com"),
    ]
    assert rows[0].lead is not None and rows[0].lead.fields["company"] == "Acme\nNorth"
    assert [(e.line, e.field) for e in rows[1].errors] == [(5, "email")]


@pytest.mark.parametrize("size", [1, 7, 4096])
async def test_a_lone_cr_in_an_unquoted_cell_is_one_row_error_and_reading_goes_on(
    size: int,
) -> None:
    data = (
        b'email,company\r\na@x.com,A\r\nb@x.com,Foo\rBar\r\nc@x.com,"Quoted\rCR"\r\nd@x.com,D\r\n'
    )
    rows = [row async for row in importing.parse(chunks_of(data, size), "csv")]
    assert [(e.line, e.field, e.reason) for r in rows for e in r.errors] == [
        (3, "row", importing.LONE_CR)
    ]
    leads = [r.lead for r in rows if r.lead]
    assert [lead.email for lead in leads] == ["a@x.com", "c@x.com", "d@x.com"]
    assert leads[1].fields["company"] == "Quoted\rCR"  # a quoted cell keeps its CR


async def test_a_csv_whose_header_is_not_utf8_is_unreadable_not_replaced_by_line_2() -> None:
    data = "email,société\ne@x.com,x\nf@x.com,y\n".encode("latin-1")
    with pytest.raises(importing.UnreadableHeader) as raised:
        await parse(data, "csv")
    assert raised.value.reason == f"line 1 (the header): {importing.NOT_UTF8}"


async def test_a_csv_field_over_the_csv_modules_limit_is_a_row_error() -> None:
    data = b'email,company\na@x.com,"' + b"x" * 200_000 + b'"\nb@x.com,B\n'
    rows = await parse(data, "csv")
    assert rows[0].errors[0].reason.startswith("not valid CSV: field larger than")
    assert rows[1].lead is not None and rows[1].lead.email == "b@x.com"


def test_an_import_summary_keeps_the_first_errors_by_line_and_says_when_it_dropped_some() -> None:
    summary = ImportSummary(max_errors=2)
    for line in (3, 4, 5):  # validation errors of later rows come first...
        summary.error(RowError(line, "email", "not an email"))
    summary.error(RowError(1, "email", "taken by another lead"))  # ...then a capture's

    exact = ImportSummary(max_errors=2)
    for line in (7, 2):
        exact.error(RowError(line, "email", "not an email"))

    assert [e["line"] for e in summary.as_json()["errors"]] == [1, 3]
    assert summary.as_json()["errors_truncated"] is True
    assert [e["line"] for e in exact.as_json()["errors"]] == [2, 7]
    assert exact.as_json()["errors_truncated"] is False


def test_an_import_summary_told_to_keep_no_errors_counts_them_only() -> None:
    summary = ImportSummary(max_errors=0)  # HANDOFF_IMPORT_MAX_ERRORS=0
    for line in (4, 2):
        summary.error(RowError(line, "email", "not an email"))

    assert (summary.as_json()["errors"], summary.as_json()["errors_truncated"]) == ([], True)
    assert summary.dropped == 2

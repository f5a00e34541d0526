"""Import parsing: rows stream in, errors carry line numbers, long lines are bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.intake import importing


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

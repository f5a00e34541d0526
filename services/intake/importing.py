"""Streaming lead imports (NDJSON or CSV): rows are validated one by one, with line numbers.

Reading is split in two: `records` cuts the stream into numbered records (NDJSON lines are
left as text, CSV records become field dicts), and `validate_records` turns a list of them
into parsed rows (JSON decoding and `LeadCapture` validation, the costly part). The second
is a pure function of picklable values, so an import can run it in another process
(`services.intake.import_validation`) while this one writes the previous batch.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from pydantic import ValidationError

from services.intake.canonical import (
    LeadCapture,
    LeadIn,
    LeadSource,
    account_domain_of,
    captured_fields,
)
from shared.validation_errors import error_reason

NDJSON_TYPES = (
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/json-lines",
)
CSV_TYPES = ("text/csv", "application/csv")
MAX_LINE = 1_000_000  # characters in one row; a longer one is reported, not buffered


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "reason": self.reason}


class ImportedLead(NamedTuple):
    """A row that validated as a `LeadCapture`, reduced to what capturing it reads.

    Small and picklable (it crosses from the validating process); `profile()` answers
    what `LeadCapture.profile()` answers for the same row. A named tuple: an import makes
    one per row in the writing process, from the tuple the pool sends, at a fifth of a
    frozen dataclass's cost (~0.4 against ~1.9 µs, with its `ParsedRow`).
    """

    email: str
    source: LeadSource
    channel: str | None
    campaign: str | None
    visitor_id: str | None
    external_ids: dict[str, str]
    fields: dict[str, Any]  # the profile, custom included (`profile()` gives a copy)
    # What a new lead takes from the row alone, computed with the row's validation (see
    # `account_domain` and `captured_fields`); None: computed when asked. Derived from the
    # fields above: a copy that changes any of them must drop these.
    account: str | None
    captured: bytes | None
    national_phone: str | None  # read in the lead's stored country (`LeadIn`)

    @classmethod
    def of(cls, lead: LeadCapture) -> ImportedLead:
        fields = lead.profile()
        return cls(
            email=lead.email,
            source=lead.source,
            channel=lead.channel,
            campaign=lead.campaign,
            visitor_id=lead.visitor_id,
            external_ids=lead.external_ids,
            fields=fields,
            account=lead.account_domain(),
            captured=captured_fields(lead, fields),
            national_phone=lead.national_phone,
        )

    def profile(self) -> dict[str, Any]:
        """A fresh copy of the profile fields (capture keeps and updates it)."""
        fields = dict(self.fields)
        if "custom" in fields:
            fields["custom"] = dict(fields["custom"])
        return fields

    def account_domain(self) -> str | None:
        """The account domain of a lead made from this row alone."""
        if self.captured is None:  # (made without `of`: nothing was computed)
            return account_domain_of(self.email, self.fields.get("company_domain"))
        return self.account

    def captured_fields(self) -> bytes:
        """`lead.captured`'s fields for a lead made from this row (`captured_fields`)."""
        return captured_fields(self) if self.captured is None else self.captured


@dataclass(frozen=True, slots=True)
class RowPolicy:
    """What an import's caller decides for its rows (picklable: it travels with them).

    `default_source` is a row's `source` when the row names none (a salesperson's rows are
    sales-generated); a row naming `sales` is refused unless `sales_allowed`.
    """

    default_source: LeadSource = "marketing"
    sales_allowed: bool = True


SALES_REFUSED = "a marketing token cannot capture sales-generated leads"


class ParsedRow(NamedTuple):
    line: int
    lead: ImportedLead | None
    errors: tuple[RowError, ...] = ()


def format_of(content_type: str) -> str | None:
    """`ndjson`, `csv`, or None for a media type we do not import."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in NDJSON_TYPES:
        return "ndjson"
    if media in CSV_TYPES:
        return "csv"
    return None


# (line, an NDJSON line's text or a CSV record's fields, a problem found while reading)
Record = tuple[int, str | dict[str, Any], str | None]


async def parse(
    chunks: AsyncIterator[bytes], fmt: str, policy: RowPolicy = RowPolicy()
) -> AsyncIterator[ParsedRow]:
    """Rows of an import as they stream in, validated here; blank lines are skipped."""
    async for record in records(chunks, fmt):
        for row in validate_records([record], policy):
            yield row


def records(
    chunks: AsyncIterator[bytes], fmt: str, ignored: list[str] | None = None
) -> AsyncIterator[Record]:
    """The numbered records of an import, not yet decoded nor validated. A CSV's columns
    that are no lead field are left out of every row and named in `ignored`."""
    return _ndjson(chunks) if fmt == "ndjson" else _csv(chunks, ignored)


def validate_records(batch: Sequence[Record], policy: RowPolicy = RowPolicy()) -> list[ParsedRow]:
    """Decode and validate records into rows (pure: may run in another process)."""
    return [_validate(line, raw, problem, policy) for line, raw, problem in batch]


def _validate(
    line: int, raw: str | dict[str, Any], problem: str | None, policy: RowPolicy
) -> ParsedRow:
    if problem is not None:
        return ParsedRow(line, None, (RowError(line, "row", problem),))
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return ParsedRow(line, None, (RowError(line, "row", f"not valid JSON: {exc}"),))
        if not isinstance(raw, dict):
            problem = "each line must be a JSON object"
            return ParsedRow(line, None, (RowError(line, "row", problem),))
    if "source" not in raw:
        raw["source"] = policy.default_source
    try:
        lead = LeadCapture.model_validate(raw)
    except ValidationError as exc:
        return ParsedRow(
            line,
            None,
            tuple(
                RowError(line, ".".join(str(p) for p in e["loc"]) or "row", error_reason(e))
                for e in exc.errors()
            ),
        )
    if lead.source == "sales" and not policy.sales_allowed:
        return ParsedRow(line, None, (RowError(line, "source", SALES_REFUSED),))
    return ParsedRow(line, ImportedLead.of(lead))


# Bytes that are not UTF-8 decode to lone surrogates ("surrogateescape"), which UTF-8 text
# never holds: a line with one is reported, not stored with the wrong letters.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
NOT_UTF8 = "not UTF-8 text (save the file as UTF-8)"


async def _texts(chunks: AsyncIterator[bytes], lone_cr_breaks: bool) -> AsyncIterator[str]:
    """The decoded text of an import, piece by piece.

    With `lone_cr_breaks` (CSV), a file whose first line break is a lone CR (classic Mac
    OS exports) has every CR, CRLF and LF made an LF: its lines are read as lines. In any
    other file a lone CR is left where it is (inside a quoted CSV cell it is the cell's; in
    an unquoted one, the row is reported)."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="surrogateescape")
    ending: str | None = None if lone_cr_breaks else "\n"  # the first line break, once seen
    held = ""  # a CR that ended a piece: whether an LF follows, the next piece tells
    async for chunk in chunks:
        text = held + decoder.decode(chunk)
        held = ""
        if ending == "\n":
            yield text
            continue
        if text.endswith("\r"):
            text, held = text[:-1], "\r"
        if ending is None:
            ending = _first_break(text)
        yield _as_lf(text) if ending == "\r" else text
    rest = held + decoder.decode(b"", final=True)
    yield rest if ending == "\n" else _as_lf(rest)


def _first_break(text: str) -> str | None:
    """`\\r` if the first line break in `text` is a lone CR, `\\n` if it is an LF or a CRLF,
    None if it has none (`text` does not end with a CR: what follows one is known)."""
    cr, lf = text.find("\r"), text.find("\n")
    if cr == -1 or -1 < lf < cr:
        return None if lf == -1 else "\n"
    return "\n" if text[cr + 1 : cr + 2] == "\n" else "\r"


def _as_lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


async def _lines(
    chunks: AsyncIterator[bytes], lone_cr_breaks: bool = False
) -> AsyncIterator[tuple[int, str | None, str | None]]:
    """Numbered lines, in time linear in the input: (number, text, None); (number, None,
    why) for a line longer than MAX_LINE; (number, text, NOT_UTF8) for a line that is not
    UTF-8 (its text, with the bad bytes as lone surrogates, still tells where quotes are).
    `lone_cr_breaks`: see `_texts`."""
    too_long_reason = f"line longer than {MAX_LINE:,} characters"
    pending: list[str] = []
    pending_length, number, too_long = 0, 0, False
    async for text in _texts(chunks, lone_cr_breaks):
        start = 0
        while (end := text.find("\n", start)) != -1:
            number += 1
            piece = text[start:end]
            if too_long or pending_length + len(piece) > MAX_LINE:
                yield number, None, too_long_reason
            else:
                yield _checked(number, ("".join(pending) + piece).rstrip("\r"))
            pending, pending_length, too_long = [], 0, False
            start = end + 1
        rest = text[start:]
        pending_length += len(rest)
        if pending_length > MAX_LINE:
            pending, too_long = [], True  # keep counting, stop keeping
        elif rest:
            pending.append(rest)
    if too_long:
        yield number + 1, None, too_long_reason
    elif pending:
        yield _checked(number + 1, "".join(pending).rstrip("\r"))


def _checked(number: int, line: str) -> tuple[int, str | None, str | None]:
    if line.isascii() or _NOT_UTF8.search(line) is None:
        return number, line, None
    return number, line, NOT_UTF8


async def _ndjson(chunks: AsyncIterator[bytes]) -> AsyncIterator[Record]:
    async for number, text, problem in _lines(chunks):
        if text is None or problem is not None:
            yield number, {}, problem
            continue
        if not text.strip():
            continue
        yield number, text, None  # decoded where it is validated


class UnreadableHeader(Exception):
    """A CSV import whose header cannot be read: no row can be, so the import fails whole."""

    def __init__(self, line: int, problem: str) -> None:
        self.reason = f"line {line} (the header): {problem}"
        super().__init__(self.reason)


LONE_CR = "a carriage return (CR) inside an unquoted cell: quote the cell or remove the CR"


async def _csv(
    chunks: AsyncIterator[bytes], ignored: list[str] | None = None
) -> AsyncIterator[Record]:
    header: list[str] | None = None
    record: list[str] = []
    first, length, inside = 0, 0, False
    bad: str | None = None  # why the record being read cannot be imported

    def refused(line: int, problem: str) -> Record:
        """A record that cannot be read: a row error, or, for the header, the import's."""
        if header is None:
            raise UnreadableHeader(line, problem)
        return line, {}, problem

    async for number, text, problem in _lines(chunks, lone_cr_breaks=True):
        if text is None:
            yield refused(number, problem or "unreadable line")
            record, length, inside, bad = [], 0, False, None
            continue
        if not record:
            first = number
        bad = bad or problem  # (read on: a quoted field may go on over the next lines)
        record.append(text)
        length += len(text)
        inside = _inside_quotes(text, inside)
        if inside and length <= MAX_LINE:
            continue  # a quoted field goes on over the next line
        lines, record, length = record, [], 0
        if inside:
            inside, bad = False, None
            yield refused(first, f"quoted field longer than {MAX_LINE:,} characters")
            continue
        if bad is not None:
            problem, bad = bad, None
            yield refused(first, problem)
            continue
        if not "".join(lines).strip():
            continue
        joined = "\n".join(lines)
        try:
            cells = next(csv.reader([joined]))
        except csv.Error as exc:  # (a lone CR in an unquoted cell, a field over the limit)
            lone_cr = "\r" in joined and "new-line" in str(exc)
            yield refused(first, LONE_CR if lone_cr else f"not valid CSV: {exc}")
            continue
        if header is None:
            header = [name if _a_lead_field(name) else "" for name in map(column_name, cells)]
            if twice := _one_field_twice(cells, header):
                raise UnreadableHeader(first, twice)
            if ignored is not None:
                ignored += [
                    cell.strip() or f"column {n + 1} (no heading)"
                    for n, (cell, name) in enumerate(zip(cells, header, strict=True))
                    if not name
                ]
        elif len(cells) != len(header):
            yield first, {}, f"expected {len(header)} columns, found {len(cells)}"
        else:
            yield first, _nest(header, cells), None
    if record:
        yield refused(first, "unterminated quoted field")


def _inside_quotes(line: str, inside: bool) -> bool:
    """Whether a CSV record is still inside a quoted field at the end of `line`.

    As Python's csv module reads it: a quote opens a field only at the field's start;
    elsewhere it is a literal character; inside a quoted field `""` is an escaped quote.
    """
    if not inside and '"' not in line:
        return False
    at_start, i = not inside, 0
    while i < len(line):
        char = line[i]
        if inside:
            if char == '"':
                if line[i + 1 : i + 2] == '"':
                    i += 1
                else:
                    inside = False
        elif char == '"' and at_start:
            inside = True
        at_start = char == "," and not inside
        i += 1
    return inside


def column_name(heading: str) -> str:
    """A CSV column's field as spreadsheets head it: "Email", "First Name", "job-title" ->
    email, first_name, job_title; the headings of common exports too ("Email Address",
    "Company Name", "Website", HubSpot's `firstname`: `HEADING_ALIASES`). Only the field's
    own name is read so (every field name is lower case, with underscores): in
    `custom.Tier` the attribute's key keeps its case."""
    field, dot, key = heading.strip().partition(".")
    field = "_".join(field.lower().replace("-", " ").replace("/", " ").split())
    if not dot:
        field = HEADING_ALIASES.get(field, field)
    return f"{field}{dot}{key.strip()}"


# Headings of CRM and spreadsheet exports for a lead field under another name (folded as
# `column_name` folds them), HubSpot's property names among them.
HEADING_ALIASES = {
    "email_address": "email",
    "e_mail": "email",
    "e_mail_address": "email",
    "firstname": "first_name",
    "lastname": "last_name",
    "company_name": "company",
    "website": "company_domain",
    "website_url": "company_domain",
    "company_website": "company_domain",
    "title": "job_title",
    "jobtitle": "job_title",
    "phone_number": "phone",
    "country_region": "country",
    "numemployees": "company_size",
    "number_of_employees": "company_size",
    "employees": "company_size",
}
_NESTED_FIELDS = ("external_ids", "custom")


def _a_lead_field(name: str) -> bool:
    group, dot, key = name.partition(".")
    if dot:  # `external_ids.hubspot`, `custom.tier`
        return group in _NESTED_FIELDS and bool(key)
    return name in LeadIn.model_fields and name not in _NESTED_FIELDS


def _one_field_twice(headings: list[str], names: list[str]) -> str | None:
    """Why a header naming one lead field in two columns cannot be read (one of the two
    values would be dropped on every row, unsaid), or None. (`names`: "" for a column that
    is no lead field, ignored however many there are.)"""
    first: dict[str, int] = {}
    for column, name in enumerate(names):
        if not name:
            continue
        if name in first:
            a, b = first[name], column
            return (
                f"columns {a + 1} ({headings[a].strip()!r}) and {b + 1} ({headings[b].strip()!r})"
                f" are both the field {name}: keep one of them"
            )
        first[name] = column
    return None


def _nest(header: list[str], cells: list[str]) -> dict[str, Any]:
    """`external_ids.hubspot` and `custom.x` columns become nested; empty cells are unset."""
    row: dict[str, Any] = {}
    for name, cell in zip(header, cells, strict=True):
        value = cell.strip()
        if not value or not name:  # (an empty cell; a column that is no lead field)
            continue
        group, dot, key = name.partition(".")
        if dot and group in _NESTED_FIELDS:
            row.setdefault(group, {})[key] = value
        else:
            row[name] = value
    return row

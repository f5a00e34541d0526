"""Streaming lead imports (NDJSON or CSV): rows are validated one by one, with line numbers."""

from __future__ import annotations

import codecs
import csv
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from services.intake.canonical import LeadCapture

NDJSON_TYPES = (
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/json-lines",
)
CSV_TYPES = ("text/csv", "application/csv")


@dataclass(frozen=True)
class RowError:
    line: int
    field: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "reason": self.reason}


@dataclass(frozen=True)
class ParsedRow:
    line: int
    lead: LeadCapture | None
    errors: tuple[RowError, ...] = ()


def format_of(content_type: str) -> str | None:
    """`ndjson`, `csv`, or None for a media type we do not import."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in NDJSON_TYPES:
        return "ndjson"
    if media in CSV_TYPES:
        return "csv"
    return None


async def parse(chunks: AsyncIterator[bytes], fmt: str) -> AsyncIterator[ParsedRow]:
    """Rows of an import as they stream in; blank lines are skipped."""
    records = _ndjson(chunks) if fmt == "ndjson" else _csv(chunks)
    async for line, fields, problem in records:
        if problem is not None:
            yield ParsedRow(line, None, (RowError(line, "row", problem),))
            continue
        try:
            yield ParsedRow(line, LeadCapture.model_validate(fields))
        except ValidationError as exc:
            yield ParsedRow(
                line,
                None,
                tuple(
                    RowError(line, ".".join(str(p) for p in e["loc"]) or "row", e["msg"])
                    for e in exc.errors()
                ),
            )


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, str]]:
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    pending = ""
    number = 0
    async for chunk in chunks:
        pending += decoder.decode(chunk)
        *complete, pending = pending.split("\n")
        for text in complete:
            number += 1
            yield number, text.rstrip("\r")
    pending += decoder.decode(b"", final=True)
    if pending:
        yield number + 1, pending.rstrip("\r")


Record = tuple[int, dict[str, Any], str | None]


async def _ndjson(chunks: AsyncIterator[bytes]) -> AsyncIterator[Record]:
    async for number, text in _lines(chunks):
        if not text.strip():
            continue
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield number, {}, f"not valid JSON: {exc}"
            continue
        if not isinstance(value, dict):
            yield number, {}, "each line must be a JSON object"
            continue
        yield number, value, None


async def _csv(chunks: AsyncIterator[bytes]) -> AsyncIterator[Record]:
    header: list[str] | None = None
    buffered, first = "", 0
    async for number, text in _lines(chunks):
        buffered, first = (f"{buffered}\n{text}", first) if buffered else (text, number)
        if buffered.count('"') % 2:  # a quoted field goes on over the next line
            continue
        record, buffered = buffered, ""
        if not record.strip():
            continue
        cells = next(csv.reader([record]))
        if header is None:
            header = [c.strip() for c in cells]
            continue
        if len(cells) != len(header):
            yield first, {}, f"expected {len(header)} columns, found {len(cells)}"
            continue
        yield first, _nest(header, cells), None
    if buffered:
        yield first, {}, "unterminated quoted field"


def _nest(header: list[str], cells: list[str]) -> dict[str, Any]:
    """`external_ids.hubspot` and `custom.x` columns become nested; empty cells are unset."""
    row: dict[str, Any] = {}
    for name, cell in zip(header, cells, strict=True):
        value = cell.strip()
        if not value:
            continue
        group, dot, key = name.partition(".")
        if dot and group in ("external_ids", "custom"):
            row.setdefault(group, {})[key] = value
        else:
            row[name] = value
    return row

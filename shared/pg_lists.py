"""Text lists sent to PostgreSQL as one text each, split again by the server; statements'
parameters renumbered, to send several as one (`shifted`).

Hot statements take their rows as one array per column (`unnest($1::varchar[], ...)`).
asyncpg, encoding an array, checks every element against `collections.abc` classes
(iterable? sized? a nested array?): about 0.4 µs an element, Python work on the loop that
was a sixth of an import row's CPU in the service (twenty values a row). A list of texts
joined by a control character is one value for asyncpg, and `string_to_array` splits it
back on the server at about the cost of decoding the array:

    $2::varchar[]   ->   string_to_array($2, E'\\x1F', E'\\x1E')::varchar[]

`PgDriver` rewrites a statement this way for every parameter used only as a text list
(`varchar`, `text`, `json`, `jsonb`; with or without a length), once per statement text,
and sends a list packed when `pack_text` can: its values are texts or None and none holds
either control character. When a list cannot be packed (another value type, a text with
U+001F or U+001E in it, a lone empty text, which splits into no element) the statement
goes as written, with arrays. Both give the same rows; only the encoding differs. (One
difference in timing: asyncpg checks a json element as it sends an array, the cast checks
a packed one where the statement evaluates it. The statements that pass json lists insert
every element.)
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, NamedTuple

SEPARATOR = "\x1f"  # ASCII unit separator, between values
NULL = "\x1e"  # ASCII record separator, a value that is NULL

# The statement's parameters, and what could hold a `$n` that is not one: literals, quoted
# identifiers, comments (skipped). A parameter used as a text list has its type.
_TOKENS = re.compile(
    r"""(?P<skip>(?<!\w)[Ee]'(?:[^'\\]|\\.|'')*'
        | '(?:[^']|'')*'
        | "(?:[^"]|"")*"
        | --[^\n]*
        | /\*.*?\*/
        | \$(?P<tag>(?:[A-Za-z_][A-Za-z_0-9]*)?)\$.*?\$(?P=tag)\$)
    | (?<![\w$])\$(?P<n>\d+)(?:::(?P<type>(?:varchar|text|jsonb?)(?:\(\d+\))?)\[\])?""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
# the split, with the two characters as escapes (the statement text stays printable)
_SPLIT = f"string_to_array(${{0}}, E'\\x{ord(SEPARATOR):02X}', E'\\x{ord(NULL):02X}')::{{1}}[]"


class Packing(NamedTuple):
    sql: str  # the statement with its text lists split from one text each
    positions: tuple[int, ...]  # which arguments (from 0) are those text lists


_packings: dict[str, Packing | None] = {}


def packing(sql: str) -> Packing | None:
    """How to send `sql`'s text lists packed (None: it has none); remembered per text."""
    try:
        return _packings[sql]
    except KeyError:
        pass
    parameters = [match for match in _TOKENS.finditer(sql) if match["n"] is not None]
    uses = Counter(int(match["n"]) for match in parameters)
    as_list = Counter(int(match["n"]) for match in parameters if match["type"])
    lists = {n for n, count in as_list.items() if uses[n] == count}  # used only as a list
    found = None
    if lists:
        parts, end = [], 0
        for match in parameters:
            if int(match["n"]) in lists:
                parts += [sql[end : match.start()], _SPLIT.format(match["n"], match["type"])]
                end = match.end()
        packed = "".join([*parts, sql[end:]])
        found = Packing(packed, tuple(sorted(n - 1 for n in lists)))
    if len(_packings) >= 1024:  # bounded: statements are a program's own texts
        _packings.clear()
    _packings[sql] = found
    return found


def pack_text(values: object) -> str | None:
    """`values` (texts or None) as one text that the split gives back exactly; None if
    it would not."""
    if not isinstance(values, list | tuple):
        return None
    try:
        text = SEPARATOR.join(values)
        nulls = 0
    except TypeError:  # a None, or a value that is not a text
        nulls = sum(1 for value in values if value is None)
        if not nulls:
            return None
        try:
            text = SEPARATOR.join([NULL if value is None else value for value in values])
        except TypeError:
            return None
    if len(values) == 1 and text == "":  # splits into no element at all
        return None
    if text.count(SEPARATOR) != max(len(values) - 1, 0) or text.count(NULL) != nulls:
        return None  # a value holds a control character the split would read
    return text


def packed(sql: str, args: Sequence[Any]) -> tuple[str, Sequence[Any]]:
    """The statement and arguments to send: text lists packed when every one can be."""
    found = packing(sql)
    if found is None:
        return sql, args
    out = list(args)
    for position in found.positions:
        if position >= len(out) or (text := pack_text(out[position])) is None:
            return sql, args
        out[position] = text
    return found.sql, out


def shifted(sql: str, by: int) -> tuple[str, int]:
    """`sql` with each parameter `$n` written `$(n + by)` (not inside literals, quoted
    identifiers or comments), and the highest `n` in it: how many it takes."""
    parts, end, highest = [], 0, 0
    for match in _TOKENS.finditer(sql):
        if match["n"] is None:
            continue
        n = int(match["n"])
        highest = max(highest, n)
        start = match.start("n") - 1  # the `$`
        parts += [sql[end:start], f"${n + by}"]
        end = match.end("n")
    return "".join([*parts, sql[end:]]), highest

"""How the embedded event log stores a record's headers: JSON pairs, values as latin-1."""

from __future__ import annotations

from collections.abc import Sequence

import orjson


def dump_headers(headers: Sequence[tuple[str, bytes]]) -> bytes:
    """`headers` as the log stores them."""
    return orjson.dumps([[k, v.decode("latin-1")] for k, v in headers])


def load_headers(raw: bytes) -> list[tuple[str, bytes]]:
    """The headers the log stored as `raw`."""
    return [(k, v.encode("latin-1")) for k, v in orjson.loads(raw)]

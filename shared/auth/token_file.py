"""The token file's contents: its records, and reading them from the file's bytes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "role": str,
    "team": (str, type(None)),
    "sha256": str,
    "created_at": str,
}


class TokenFileError(ValueError):
    """The token file cannot be read, or is not a token file; the message (one line) names
    the file and says what is wrong."""


@dataclass(frozen=True)
class TokenRecord:
    name: str
    role: str
    team: str | None
    sha256: str
    created_at: str


def parse_token_file(data: bytes, path: Path) -> list[TokenRecord]:
    """The token records of a token file's bytes; `TokenFileError` (naming `path`) if
    they are not a token file."""

    def bad(reason: str) -> TokenFileError:
        return TokenFileError(f"{path}: not a valid token file: {' '.join(reason.split())}")

    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad("not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise bad(f"not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise bad(f'expected an object with a "tokens" list, got {_kind(raw)}')
    items = raw.get("tokens", [])
    if not isinstance(items, list):
        raise bad(f'"tokens" must be a list, got {_kind(items)}')
    records = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise bad(f"token {index} must be an object, got {_kind(item)}")
        if missing := [f for f in _FIELDS if f not in item]:
            raise bad(f"token {index} lacks {', '.join(missing)}")
        if unknown := [f for f in item if f not in _FIELDS]:
            raise bad(f"token {index} has unknown fields {', '.join(map(str, unknown))}")
        if wrong := [f for f, kind in _FIELDS.items() if not isinstance(item[f], kind)]:
            raise bad(f"token {index} has a {', '.join(wrong)} of the wrong type")
        records.append(TokenRecord(**item))
    return records


def _kind(value: object) -> str:
    kinds: dict[type, str] = {dict: "an object", list: "a list", str: "a string"}
    return kinds.get(type(value), repr(value))

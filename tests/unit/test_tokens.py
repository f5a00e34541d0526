"""The token store: a bad token file neither locks a running server's callers out nor makes
the CLI print a traceback, and a token's name is a sound actor id."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from shared.auth.token_file import TokenFileError
from shared.auth.token_store import TokenStore

BAD_FILES = {
    "truncated JSON": b'{"tokens": [',
    "empty": b"",
    "a list": b"[]",
    "tokens not a list": b'{"tokens": {}}',
    "a token not an object": b'{"tokens": [1]}',
    "a field missing": b'{"tokens": [{"name": "a", "role": "admin"}]}',
    "a field of the wrong type": json.dumps(
        {"tokens": [{"name": 7, "role": "admin", "team": None, "sha256": "x", "created_at": "t"}]}
    ).encode(),
    "an unknown field": json.dumps(
        {
            "tokens": [
                {
                    "name": "a",
                    "role": "admin",
                    "team": None,
                    "sha256": "x",
                    "created_at": "t",
                    "extra": 1,
                }
            ]
        }
    ).encode(),
    "not UTF-8": b'{"tokens": ["\xff"]}',
}


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "tokens.json")


def spoil(store: TokenStore, content: bytes = b'{"tokens": [') -> None:
    store.path.write_bytes(content)
    os.utime(store.path, ns=(0, store.path.stat().st_mtime_ns + 1_000_000))  # a new mtime


def errors_of(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [entry for entry in logs if entry["log_level"] == "error"]


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_the_cli_reads_of_a_bad_file_say_in_one_line_which_file_and_what_is_wrong(
    store: TokenStore, content: bytes
) -> None:
    store.path.write_bytes(content)

    with pytest.raises(TokenFileError) as raised:
        store.records()

    message = str(raised.value)
    assert message.startswith(f"{store.path}: ")
    assert "\n" not in message
    assert len(message) > len(f"{store.path}: ") + 10


def test_an_unreadable_path_is_a_token_file_error(store: TokenStore) -> None:
    store.path.mkdir()

    with pytest.raises(TokenFileError, match="cannot read it"):
        store.records()


def test_creating_or_revoking_never_writes_over_a_file_it_could_not_read(
    store: TokenStore,
) -> None:
    store.create(name="crm", role="integration")
    spoil(store, b'{"tokens": [{"name": "crm"')

    with pytest.raises(TokenFileError):
        store.create(name="other", role="viewer")
    with pytest.raises(TokenFileError):
        store.revoke("crm")
    assert store.path.read_bytes() == b'{"tokens": [{"name": "crm"'


def test_a_server_keeps_the_last_good_tokens_and_logs_once_per_change(
    store: TokenStore,
) -> None:
    token = store.create(name="crm", role="integration")
    assert store.verify(token) is not None

    with capture_logs() as logs:
        spoil(store)
        first = [store.verify(token) for _ in range(3)]
        spoil(store, b"[]")
        second = [store.verify(token) for _ in range(3)]

    assert all(p is not None and p.id == "crm" for p in first + second)
    errors = errors_of(logs)
    assert len(errors) == 2
    assert all(str(store.path) in str(e["reason"]) for e in errors)
    assert errors[0]["using"] == "the last good tokens"


def test_a_fixed_file_is_read_again_without_a_restart(store: TokenStore) -> None:
    old = store.create(name="crm", role="integration")
    store.verify(old)
    spoil(store)
    store.verify(old)

    store.path.unlink()
    new = store.create(name="board", role="viewer")

    assert store.verify(new) is not None
    assert store.verify(old) is None


def test_a_server_that_never_read_the_file_well_has_no_tokens_to_go_by(
    store: TokenStore,
) -> None:
    spoil(store)

    with capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(TokenFileError):
                store.verify("hnd_anything")

    assert len(errors_of(logs)) == 1
    assert errors_of(logs)[0]["using"] == "no tokens"
    store.path.unlink()
    token = store.create(name="crm", role="integration")
    assert store.verify(token) is not None


def test_no_file_is_no_tokens(store: TokenStore) -> None:
    assert store.verify("hnd_anything") is None
    assert store.records() == []


@pytest.mark.parametrize(
    "name",
    ["", " ", "\t", "a\tb", "line\nbreak", "bell\x07", "nul\x00", "rtl\u202eevil", "ls\u2028"],
)
def test_blank_names_and_names_with_control_characters_are_refused(
    store: TokenStore, name: str
) -> None:
    with pytest.raises(ValueError, match="name") as raised:
        store.create(name=name, role="viewer")

    assert "\n" not in str(raised.value)
    assert not store.path.exists()


@pytest.mark.parametrize("name", ["crm", "Ana Souza", "café-sync", "board_2024"])
def test_ordinary_names_are_accepted(store: TokenStore, name: str) -> None:
    token = store.create(name=name, role="viewer")

    principal = store.verify(token)
    assert principal is not None and principal.id == name

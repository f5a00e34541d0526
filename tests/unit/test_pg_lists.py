"""Text lists packed into one text for PostgreSQL (`shared.pg_lists`): which parameters
are rewritten, and which lists can travel packed. The round trip through a real server is
in tests/integration/test_pg_driver.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import create_mock_engine

from shared.db import new_metadata
from shared.events.catalog import CATALOG
from shared.outbox import Outbox
from shared.outbox_tables import define_outbox_tables
from shared.pg_lists import NULL, SEPARATOR, pack_text, packed, packing, shifted

SPLIT = "string_to_array(${}, E'\\x1F', E'\\x1E')::{}[]"


def test_only_parameters_used_as_text_lists_are_rewritten() -> None:
    sql = (
        "INSERT INTO t (a, b, c, d, e) SELECT $1::varchar, x, y, z, w FROM unnest("
        "$2::varchar[], $3::VARCHAR(36)[], $4::JSONB[], $5::timestamptz[], $6::bigint[])"
    )
    found = packing(sql)
    assert found is not None
    assert found.positions == (1, 2, 3)
    assert found.sql == (
        "INSERT INTO t (a, b, c, d, e) SELECT $1::varchar, x, y, z, w FROM unnest("
        f"{SPLIT.format(2, 'varchar')}, {SPLIT.format(3, 'VARCHAR(36)')}, "
        f"{SPLIT.format(4, 'JSONB')}, $5::timestamptz[], $6::bigint[])"
    )


def test_a_parameter_also_used_otherwise_keeps_its_array() -> None:
    assert packing("SELECT * FROM unnest($1::text[]) AS k(v) WHERE v = ANY($1)") is None
    assert packing("SELECT * FROM unnest($1::int[])") is None
    found = packing("SELECT $10::text[], $1::text[]")  # $1 is not a prefix of $10
    assert found is not None and found.positions == (0, 9)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT $1::text[], '$1::text[]', E'\\' $1::text[]', \"a$1::text[]\"",
        "SELECT $1::text[] -- $1::text[]\n, $$ $1::text[] $$, $q$ $1::text[] $q$",
        "SELECT $1::text[] /* $1::text[] */, x$2::text[]",
    ],
)
def test_literals_identifiers_and_comments_are_left_alone(sql: str) -> None:
    found = packing(sql)
    assert found is not None and found.positions == (0,)
    assert found.sql == sql.replace("$1::text[]", SPLIT.format(1, "text"), 1)


def test_the_outbox_flush_packs_its_texts_not_its_numbers_times_or_bytes() -> None:
    outbox = Outbox(service="s", tables=define_outbox_tables(new_metadata()), catalog=CATALOG)
    session = SimpleNamespace(bind=create_mock_engine("postgresql+asyncpg://", executor=None))
    ctes, statement = outbox._postgres_statement(session)  # type: ignore[arg-type]
    found = packing(f"WITH {', '.join(ctes)} {statement}")  # as sent alone
    # ids, topics, keys, types, traceparents, subjects; not values (bytea), nor the one
    # event time or the one created_at (not lists)
    assert found is not None and found.positions == (0, 1, 2, 3, 4, 8)
    assert "pg_advisory_xact_lock(" in found.sql and found.sql.count("string_to_array(") == 6


@pytest.mark.parametrize(
    ("values", "text"),
    [
        (["a", "b"], f"a{SEPARATOR}b"),
        (("a", "b"), f"a{SEPARATOR}b"),
        ([], ""),  # splits into an empty array, as an empty list is
        (["", ""], SEPARATOR),
        (["x", ""], f"x{SEPARATOR}"),
        ([None], NULL),
        (["a", None, "b"], f"a{SEPARATOR}{NULL}{SEPARATOR}b"),
        (["é", "☃", '{"k": "v"}'], f"é{SEPARATOR}☃{SEPARATOR}" + '{"k": "v"}'),
    ],
)
def test_lists_of_texts_pack(values: list[str | None], text: str) -> None:
    assert pack_text(values) == text


@pytest.mark.parametrize(
    "values",
    [
        [""],  # one empty text splits into no element
        [f"a{SEPARATOR}b"],
        ["a", f"{NULL}"],
        [f"x{NULL}y", None],
        ["a", 1],
        [None, b"bytes"],
        [1, 2],
        "abc",
        None,
    ],
)
def test_what_the_split_would_misread_is_not_packed(values: object) -> None:
    assert pack_text(values) is None


def test_a_statement_goes_as_written_when_one_of_its_lists_cannot_be_packed() -> None:
    sql = "SELECT * FROM unnest($1::varchar[], $2::varchar[])"
    found = packing(sql)
    assert found is not None
    assert packed(sql, (["a", "b"], ["c", "d"])) == (
        found.sql,
        [f"a{SEPARATOR}b", f"c{SEPARATOR}d"],
    )
    fallback = (["a", "b"], ["c", f"d{SEPARATOR}"])
    assert packed(sql, fallback) == (sql, fallback)
    assert packed("SELECT 1", ()) == ("SELECT 1", ())


def test_parameters_are_shifted_outside_literals_identifiers_and_comments() -> None:
    sql = "SELECT $1::text[], '$2', \"$3\", $10 -- $4\n, $$ $5 $$, $2 /* $6 */"
    assert shifted(sql, 5) == (
        "SELECT $6::text[], '$2', \"$3\", $15 -- $4\n, $$ $5 $$, $7 /* $6 */",
        10,
    )
    assert shifted("SELECT 1", 3) == ("SELECT 1", 0)

"""The webhook route reads `source` from the query string as FastAPI's `Query` would."""

from __future__ import annotations

import pytest
from starlette.datastructures import QueryParams

from services.intake import webhooks_api


@pytest.mark.parametrize(
    "query",
    [
        b"",
        b"source=hs",
        b"source=hs%3Amain&next=%2Fok",
        b"a=1&source=first&source=last",
        b"source=",
        b"source",
        b"other=1",
        b"source=a+b%20c",
    ],
)
def test_source_is_read_as_starlette_reads_it(query: bytes) -> None:
    expected = QueryParams(query).get("source") if query else None
    assert webhooks_api._source_param(query) == expected
    assert webhooks_api._source_param(query) == expected  # and again, remembered


def test_remembered_query_strings_are_bounded() -> None:
    for n in range(3000):
        assert webhooks_api._source_param(f"source=s{n}".encode()) == f"s{n}"
    assert len(webhooks_api._SOURCES_BY_QUERY) <= 1024

"""The lookups of a capture and of a webhook batch use an index, whatever the table size.

(A lookup by external id alone once scanned every external id for each batch: the key is
(provider, external_id).)
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from services.intake import leads, webhook_intake
from services.intake.models import metadata

PARAMS: dict[str, list[str] | str] = {
    "provider": "hubspot",
    "external": ["1", "2"],
    "emails": ["a@x.com", "b@x.com"],
    "ids": ["i1", "i2"],
    "leads": ["l1", "l2"],
    "domains": ["x.com", "y.com"],
    "source": "hs",
}


@pytest.mark.parametrize(
    "statement",
    [
        leads._IDS_BY_EXTERNAL_ID,
        leads._EXTERNAL_IDS_OF_LEADS,
        leads._LEADS_BY_EMAIL,
        leads._LEADS_BY_ID,
        leads._LEADS_BY_EMAIL_OR_ID,
        leads._ACCOUNTS_BY_DOMAIN,
        webhook_intake._SEEN,
    ],
)
def test_a_capture_lookup_searches_an_index(statement: Any) -> None:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    names = {p.key for p in statement.compile().binds.values()}
    params = {k: v for k, v in PARAMS.items() if k in names}
    with engine.connect() as conn:
        plan = conn.execute(sa.text("EXPLAIN QUERY PLAN " + _sql(statement, params, conn)))
        steps = [row[3] for row in plan]
    assert steps and not [s for s in steps if s.startswith("SCAN")], steps


def _sql(statement: Any, params: dict[str, Any], conn: sa.Connection) -> str:
    bound = statement.params(**params)
    return str(bound.compile(conn, compile_kwargs={"literal_binds": True}))

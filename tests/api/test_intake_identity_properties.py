"""Dedupe properties (hypothesis): one lead per person, whatever the order or repetition."""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.intake.app import definition
from services.intake.canonical import LeadIn
from services.intake.leads import capture_batch
from services.intake.models import leads, outbox_tables
from shared.db import Database
from shared.events.catalog import CATALOG
from shared.migrations import upgrade
from shared.outbox import Outbox

EMAILS = ["ann@acme.com", "ANN@acme.com ", "bo@acme.com", "cy@gmail.com", "di@initech.com"]
captures = st.lists(
    st.tuples(
        st.sampled_from(EMAILS),
        st.sampled_from(["CEO", "CTO", None]),
        st.sampled_from(["marketing", "sales"]),
    ),
    min_size=1,
    max_size=10,
)


async def apply(db: Database, items: list[tuple[str, str | None, str]]) -> None:
    outbox = Outbox(service="intake", tables=outbox_tables, catalog=CATALOG)
    for email, title, source in items:  # one capture per request, as the API does
        async with db.transaction() as session:
            await capture_batch(
                session,
                outbox,
                [LeadIn(email=email, job_title=title, source=source)],
                sales_owned=frozenset({"job_title"}),
            )


async def state(db: Database) -> dict[str, tuple[str, dict[str, object]]]:
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(leads.c.email, leads.c.id, leads.c.profile))).all()
    return {r.email: (r.id, r.profile) for r in rows}


async def fresh_database(folder: Path, name: str) -> Database:
    url = f"sqlite+aiosqlite:///{folder / name}.db"
    await upgrade(definition().migrations, url)
    return Database(url)


@settings(max_examples=25, deadline=None)
@given(items=captures, seed=st.integers(0, 2**16))
def test_captures_dedupe_to_one_lead_per_person_in_any_order_and_again(
    items: list[tuple[str, str | None, str]], seed: int
) -> None:
    async def scenario() -> None:
        folder = Path(tempfile.mkdtemp())
        in_order, shuffled = await fresh_database(folder, "a"), await fresh_database(folder, "b")
        await apply(in_order, items)
        once = await state(in_order)
        await apply(in_order, items)
        twice = await state(in_order)
        await apply(shuffled, random.Random(seed).sample(items, len(items)))
        other_order = await state(shuffled)
        for db in (in_order, shuffled):
            await db.dispose()

        assert set(once) == {e.strip().lower() for e, _, _ in items}
        assert twice == once  # repeating the same captures changes nothing
        assert set(other_order) == set(once)  # the same people, whatever the order

    asyncio.run(scenario())

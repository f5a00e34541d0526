"""The outbox's SQL, written once per outbox and table: the PostgreSQL statements that
number and insert a transaction's events in one go (their rows as arrays), and SQLite's
counter upsert. Only our own quoted table names are interpolated; the data are parameters.
"""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.sql.compiler import IdentifierPreparer

from shared.events.codec import SEQUENCE_DIGITS, sequence_text

Statement = tuple[tuple[str, ...], str]  # its `WITH` parts, and the statement itself

# The stored form of a `ce_sequence` header of 0, which PostgreSQL's flush numbers in SQL.
SEQUENCE_PLACEHOLDER = f'["ce_sequence","{sequence_text(0)}"]'


def numbered_write_sql(quote: IdentifierPreparer, outbox: Table, sequences: Table) -> Statement:
    """Advance each subject's counter by its count of events and insert the events numbered
    from it ($1-$5 the rows' columns, $6 their one `created_at`, $7/$8 subjects and counts,
    $9 each event's place among its subject's events here).

    Plain SQL for the driver (asyncpg's $n parameters): nothing for SQLAlchemy to compile
    or to process per row; asyncpg encodes the arrays. Subjects are locked in a fixed order
    (concurrent writers cannot deadlock); the sort before the insert makes every counter
    advance before any row takes its id, in the events' order. Sent with the unit of
    work's other writes (`PgDriver.write_at_commit`): its `WITH` parts are named for its
    table.
    """
    seq, out = quote.format_table(sequences), quote.format_table(outbox)
    counts, reserved = quote.quote(f"{outbox.name}_counts"), quote.quote(f"{outbox.name}_reserved")
    ctes = (
        f"{counts} AS (SELECT * FROM unnest($7::varchar[], $8::bigint[]) "  # noqa: S608
        "AS c(key, n))",
        f"{reserved} AS (INSERT INTO {seq} (subject, last) "  # noqa: S608
        f"SELECT key, n FROM {counts} ORDER BY key "
        f"ON CONFLICT (subject) DO UPDATE SET last = {seq}.last + excluded.last "
        "RETURNING subject, last)",
    )
    statement = (
        f"INSERT INTO {out} (event_id, topic, key, headers, value, created_at) "  # noqa: S608
        "SELECT e.event_id, e.topic, e.key, "
        f"replace(e.headers, '{SEQUENCE_PLACEHOLDER}', "
        '\'["ce_sequence","\' || lpad((r.last - c.n + e.k)::text, '
        f"greatest({SEQUENCE_DIGITS}, length((r.last - c.n + e.k)::text)), '0') "
        "|| '\"]'), "
        "e.value, $6::timestamptz "
        "FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::text[], "
        "$5::bytea[], $9::bigint[]) WITH ORDINALITY "
        "AS e(event_id, topic, key, headers, value, k, ord) "
        f"JOIN {counts} c ON c.key = e.key "
        f"JOIN {reserved} r ON r.subject = e.key "
        "ORDER BY e.ord"
    )
    return ctes, statement


def fresh_write_sql(quote: IdentifierPreparer, outbox: Table, sequences: Table) -> Statement:
    """Insert the counters of subjects new in the transaction ($7/$8) and their events,
    numbered already ($1-$5, and $6 their one `created_at`): two plain inserts, no counter
    to read or lock."""
    seq, out = quote.format_table(sequences), quote.format_table(outbox)
    counters = quote.quote(f"{outbox.name}_new_counters")
    ctes = (
        f"{counters} AS (INSERT INTO {seq} (subject, last) "  # noqa: S608
        "SELECT * FROM unnest($7::varchar[], $8::bigint[]))",
    )
    statement = (
        f"INSERT INTO {out} (event_id, topic, key, headers, value, created_at) "  # noqa: S608
        "SELECT e.event_id, e.topic, e.key, e.headers, e.value, $6::timestamptz "
        "FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::text[], "
        "$5::bytea[]) WITH ORDINALITY "
        "AS e(event_id, topic, key, headers, value, ord) ORDER BY e.ord"
    )
    return ctes, statement


def sqlite_reserve_sql(quote: IdentifierPreparer, sequences: Table) -> tuple[str, str]:
    """SQLite's counter upsert, as the head and tail around its `VALUES` rows: advances
    each subject's counter and returns the new last value."""
    seq = quote.format_table(sequences)
    return (
        f"INSERT INTO {seq} (subject, last)",
        f"ON CONFLICT (subject) DO UPDATE SET last = {seq}.last + excluded.last "
        "RETURNING subject, last",
    )

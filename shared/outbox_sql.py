"""The outbox's SQL, written once per outbox and table: PostgreSQL's statement that locks
a transaction's subjects and inserts its events in one go (their rows as arrays), and
SQLite's counter upsert. Only our own quoted table names and numbers are interpolated; the
data are parameters.

How an event's `ce_sequence` is made depends on the database:

- **PostgreSQL**: the sequence is the outbox row's id. Ids only grow, so a subject's events
  are numbered in the order they were written, with gaps (other subjects' events take the
  ids between). The write first takes a transaction-scoped lock per subject, so a second
  transaction writing about the same subject takes its ids only once the first has
  committed: ids, and so the relay's order, follow each subject's commits. The row's
  `sequence` column is NULL: the relay sends its id.
- **SQLite** (one writer at a time): each subject has a counter in `event_sequences`,
  numbered 1, 2, 3; the row's `sequence` column holds the number. (Its `id` cannot serve:
  without `AUTOINCREMENT` SQLite gives an emptied table's next row the id 1 again.)
"""

from __future__ import annotations

import zlib

from sqlalchemy import Table
from sqlalchemy.sql.compiler import IdentifierPreparer

Statement = tuple[tuple[str, ...], str]  # its `WITH` parts, and the statement itself


def subject_lock_class(service: str) -> int:
    """The first key of the advisory locks a service's outbox takes per subject (the second
    is the subject's hash): PostgreSQL's two-key advisory locks are a key space of their
    own, apart from the relay's one-key lock, and this keeps services sharing a database
    apart."""
    key = zlib.crc32(f"handoff.outbox.subject.{service}".encode())
    return key - 2**32 if key >= 2**31 else key  # (an int4)


def pg_write_sql(quote: IdentifierPreparer, outbox: Table, lock_class: int) -> Statement:
    """Lock each subject of the transaction's events, then insert the events ($1-$6 the
    rows' columns, $7 their one `event_time` and $8 their one `created_at`, $9 the subjects).

    Plain SQL for the driver (asyncpg's $n parameters): nothing for SQLAlchemy to compile
    or to process per row; asyncpg encodes the arrays. Subjects are locked in the order of
    their hashes (concurrent writers cannot deadlock on them); the locks are a materialized
    part that the insert's rows join, so every lock is held before any row takes its id
    (the ids are drawn above the join), and the rows take their ids in the events' order
    (`ORDER BY e.ord`, which the ordinality already satisfies). Sent with the unit of
    work's other writes (`PgDriver.write_at_commit`): its `WITH` part is named for its
    table.
    """
    out = quote.format_table(outbox)
    locks = quote.quote(f"{outbox.name}_subject_locks")
    ctes = (
        f"{locks} AS MATERIALIZED (SELECT "  # noqa: S608
        f"count(pg_advisory_xact_lock({int(lock_class)}, h)) AS n "
        "FROM (SELECT DISTINCT hashtext(s) AS h FROM unnest($9::varchar[]) AS s "
        "ORDER BY 1) AS subjects)",
    )
    statement = (
        f"INSERT INTO {out} (event_id, topic, key, event_type, event_time, traceparent, "  # noqa: S608
        "value, created_at) SELECT e.event_id, e.topic, e.key, e.event_type, $7::varchar, "
        "e.traceparent, e.value, $8::timestamptz FROM unnest($1::varchar[], $2::varchar[], "
        "$3::varchar[], $4::varchar[], $5::text[], $6::bytea[]) "
        "WITH ORDINALITY AS e(event_id, topic, key, event_type, traceparent, value, ord) "
        f"CROSS JOIN {locks} ORDER BY e.ord"
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

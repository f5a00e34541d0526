"""The outbox's SQL, written once per outbox and table: PostgreSQL's statement that locks
a transaction's subjects and inserts its events in one go (their rows as arrays), and
SQLite's counter upsert. Only our own quoted table names and numbers are interpolated; the
data are parameters.

How an event's `ce_sequence` is made depends on the database:

- **PostgreSQL**: the sequence is the outbox row's id. Ids only grow, so a subject's events
  are numbered in the order they were written, with gaps (other subjects' events take the
  ids between). The write first takes a transaction-scoped lock per subject, so a second
  transaction writing about the same subject takes its ids only once the first has
  committed: ids, and so the relay's order, follow each subject's commits. The stored
  headers carry a placeholder sequence, which the relay fills in (`outgoing_headers`).
- **SQLite** (one writer at a time): each subject has a counter in `event_sequences`,
  numbered 1, 2, 3; the stored headers carry the number itself. (Its `id` cannot serve:
  without `AUTOINCREMENT` SQLite gives an emptied table's next row the id 1 again.)
"""

from __future__ import annotations

import zlib

from sqlalchemy import Table
from sqlalchemy.sql.compiler import IdentifierPreparer

from shared.events.codec import sequence_text

Statement = tuple[tuple[str, ...], str]  # its `WITH` parts, and the statement itself


def _sequence_pair(sequence: int) -> str:
    """A `ce_sequence` header as it is stored (one pair of the stored JSON list)."""
    return f'["ce_sequence","{sequence_text(sequence)}"]'


# The stored form of a `ce_sequence` header of 0, which the relay replaces by the row's id
# (PostgreSQL). A header value is JSON-escaped text, so this cannot occur inside one.
SEQUENCE_PLACEHOLDER = _sequence_pair(0)


def outgoing_headers(stored: str, row_id: int) -> str:
    """The headers an outbox row is published with: its stored headers, their placeholder
    sequence (PostgreSQL's) replaced by the row's id; headers numbered already (SQLite's,
    and PostgreSQL rows written before ids were the sequence) go as they are."""
    return stored.replace(SEQUENCE_PLACEHOLDER, _sequence_pair(row_id), 1)


def subject_lock_class(service: str) -> int:
    """The first key of the advisory locks a service's outbox takes per subject (the second
    is the subject's hash): PostgreSQL's two-key advisory locks are a key space of their
    own, apart from the relay's one-key lock, and this keeps services sharing a database
    apart."""
    key = zlib.crc32(f"handoff.outbox.subject.{service}".encode())
    return key - 2**32 if key >= 2**31 else key  # (an int4)


def pg_write_sql(quote: IdentifierPreparer, outbox: Table, lock_class: int) -> Statement:
    """Lock each subject of the transaction's events, then insert the events ($1-$5 the
    rows' columns, $6 their one `created_at`, $7 the subjects).

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
        "FROM (SELECT DISTINCT hashtext(s) AS h FROM unnest($7::varchar[]) AS s "
        "ORDER BY 1) AS subjects)",
    )
    statement = (
        f"INSERT INTO {out} (event_id, topic, key, headers, value, created_at) "  # noqa: S608
        "SELECT e.event_id, e.topic, e.key, e.headers, e.value, $6::timestamptz "
        "FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::text[], "
        "$5::bytea[]) WITH ORDINALITY AS e(event_id, topic, key, headers, value, ord) "
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

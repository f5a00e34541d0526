"""Whether a failed transaction is the database's trouble (run it again) or the event's
(after its attempts, dead-letter it)."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError

# A database failing a transaction for reasons of its own, by SQLSTATE: a transaction
# rolled back for the others' sake (deadlock, serialization failure), a connection lost,
# insufficient resources, the server shutting down or starting. (Not 57014, a statement
# cancelled or timed out: the event's statement may be what is slow.)
_TROUBLE_CLASSES = frozenset({"40", "08", "53"})
_TROUBLE_STATES = frozenset({"57P01", "57P02", "57P03", "58030"})
# SQLite's: another writer holds the file, the disk is full or failing, the file is gone.
# (Every other statement error is SQLITE_ERROR, which is the statement's: the event's.)
_SQLITE_TROUBLE = frozenset(
    {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN"}
)


def database_trouble(error: BaseException) -> bool:
    """True when `error` is the database's trouble rather than the event's: run again
    (the consumer restarts, the batch comes again), never dead-lettered. What the event's
    own statements cause (a constraint, a bad value, malformed JSON, a statement timeout)
    is the event's: after its attempts it is dead-lettered."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    cause = error.orig
    sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if isinstance(sqlstate, str):
        return sqlstate[:2] in _TROUBLE_CLASSES or sqlstate in _TROUBLE_STATES
    name = getattr(cause, "sqlite_errorname", None)
    return isinstance(name, str) and _sqlite_name(name) in _SQLITE_TROUBLE


def _sqlite_name(name: str) -> str:
    """The primary result code's name of an extended one (SQLITE_IOERR_WRITE: SQLITE_IOERR)."""
    return "_".join(name.split("_", 2)[:2])

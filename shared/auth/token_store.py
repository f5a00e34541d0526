"""Bearer tokens with roles: high-entropy, stored only as SHA-256 hashes.

Tokens live in one JSON file (`HANDOFF_TOKENS_FILE`) that every service reads, the way a
Kubernetes secret is mounted into every pod; `handoff tokens create` writes it. SHA-256 is
the right hash here: a token has 256 bits of entropy, so there is nothing to brute-force.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import structlog

from shared.auth.principal import ROLES, Principal
from shared.auth.token_file import TokenFileError, TokenRecord, parse_token_file

TOKEN_PREFIX = "hnd_"  # noqa: S105 - a prefix, not a secret: lets secret scanners spot leaks
# Not in a name: control and format characters (a tab would split `tokens list`'s columns, a
# bidi override would disguise the actor in the audit trail), line and paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
log = structlog.get_logger(__name__)


class TokenStore:
    """Reads (and, for the CLI, writes) the hashed-token file; reloads when it changes.

    A server keeps the last good token set while the file is unreadable (an edit gone wrong
    must not lock every caller out), logging the problem once per change of the file. A
    server that never read it well has no tokens to go by: `verify` raises `TokenFileError`,
    which requests get as 503 until the file is fixed (it is read again as soon as it
    changes, no restart needed). The CLI's reads and writes raise `TokenFileError`, and
    never write over a file they could not read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, ...] | None = None  # the file as last read (well or not)
        self._by_hash: dict[str, TokenRecord] | None = None  # the last good set
        self._problem: TokenFileError | None = None  # what is wrong with the file now

    def create(self, *, name: str, role: str, team: str | None = None) -> str:
        """Add a token and return its plaintext (shown once, never stored)."""
        _check_name(name)
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
        if team not in (None, "marketing", "sales"):
            raise ValueError(f"team must be marketing or sales; got {team!r}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        created_at = datetime.now(UTC).isoformat(timespec="seconds")
        with self._editing() as records:
            if any(r.name == name for r in records):
                raise ValueError(f"a token named {name!r} exists; revoke it first")
            records.append(TokenRecord(name, role, team, _digest(token), created_at))
        return token

    def revoke(self, name: str) -> bool:
        with self._editing() as records:
            kept = [r for r in records if r.name != name]
            revoked = len(kept) != len(records)
            records[:] = kept
        return revoked

    def records(self) -> list[TokenRecord]:
        return self._read()

    def verify(self, token: str) -> Principal | None:
        """The principal behind a presented token, or None.

        Raises:
            TokenFileError: the file is unreadable and was never read well.
        """
        by_hash = self._current()
        digest = _digest(token)
        for known, record in by_hash.items():
            if hmac.compare_digest(known, digest):
                return Principal(id=record.name, role=record.role, team=record.team)
        return None

    def _current(self) -> dict[str, TokenRecord]:
        """The token set to go by: the file's, read again if it changed; the last good one
        while it is unreadable."""
        try:
            seen = _signature(os.stat(self.path))
        except FileNotFoundError:  # no file (yet): no tokens
            self._seen, self._by_hash, self._problem = None, {}, None
            return self._by_hash
        except OSError as exc:
            seen = (-1, exc.errno or 0)
        if seen != self._seen:
            self._reload(seen)
        if self._by_hash is None:
            raise self._problem or TokenFileError(f"{self.path}: not read")
        return self._by_hash

    def _reload(self, seen: tuple[int, ...]) -> None:
        try:
            records, seen = self._load()
        except FileNotFoundError:  # gone between the stat and the open
            self._seen, self._by_hash, self._problem = None, {}, None
            return
        except TokenFileError as exc:
            self._seen, self._problem = seen, exc
            log.error(
                "token file unreadable",
                path=str(self.path),
                reason=str(exc),
                using="the last good tokens" if self._by_hash is not None else "no tokens",
            )
            return
        if self._problem is not None:
            log.info("token file readable again", path=str(self.path), tokens=len(records))
        self._seen, self._problem = seen, None
        self._by_hash = {r.sha256: r for r in records}

    def _read(self) -> list[TokenRecord]:
        try:
            return self._load()[0]
        except FileNotFoundError:
            return []

    def _load(self) -> tuple[list[TokenRecord], tuple[int, ...]]:
        """The file's tokens and its signature (of the very file read); `TokenFileError` if
        it is unreadable, `FileNotFoundError` if there is none."""
        try:
            with self.path.open("rb") as source:
                seen = _signature(os.fstat(source.fileno()))
                data = source.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise TokenFileError(f"{self.path}: cannot read it: {exc.strerror or exc}") from None
        return parse_token_file(data, self.path), seen

    @contextlib.contextmanager
    def _editing(self) -> Iterator[list[TokenRecord]]:
        """The file's records to change in place, written back when the block ends well.

        Writers (concurrent `handoff tokens` runs) take turns on a lock file beside the
        token file, so none writes over another's change; readers (servers) never wait for
        it, as each write replaces the file whole.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self._read()
            before = list(records)
            yield records
            if records != before:
                self._write(records)
        finally:
            os.close(lock)  # (which lets the lock go)

    def _write(self, records: list[TokenRecord]) -> None:
        """Replace the file (mode 0600) by one holding `records`, through a temporary file
        of this writer's own, on disk before it takes the file's place."""
        data = json.dumps({"tokens": [asdict(r) for r in records]}, indent=2).encode()
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _signature(stat: os.stat_result) -> tuple[int, ...]:
    """What changes when the file is replaced, edited, or has its permissions changed."""
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def _check_name(name: str) -> None:
    """`ValueError` unless `name` makes a sound actor id (and one `tokens list` column)."""
    if not name.strip():
        raise ValueError("a token's name must not be blank (it is the actor id of its holder)")
    if bad := sorted({c for c in name if unicodedata.category(c) in _UNPRINTABLE}):
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad)
        raise ValueError(f"a token's name must not contain control characters ({shown}): {name!r}")

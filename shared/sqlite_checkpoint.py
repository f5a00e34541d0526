"""WAL checkpoints off the event loop, and a WAL that does not grow without bound.

With SQLite running inline on the loop (see `sqlite_inline`), SQLite's automatic
checkpoints would fsync on the loop: stalls of several milliseconds every few hundred
commits. Automatic checkpoints are turned off and a thread checkpoints instead, five
times a second: a checkpoint ends with an fsync of the database file, which holds up the
writes of the loop meanwhile; a second's worth of pages made that 40-70 ms (the p99 of
the local bus at 5,000 events/s), a fifth of a second's about 15.

A passive checkpoint copies the frames that were in the WAL when it began; under steady
writes new frames keep coming, the checkpoint never catches up with the end of the log,
and SQLite never starts writing the WAL from its beginning again: the file grows for as
long as the writes go on (hundreds of megabytes a minute under load). So once the WAL
holds more than a limit, the checkpointer thread catches up (passive checkpoints back to
back) until little is left to copy; the next writer, in its write turn (no other writer of
this process can start), has the rest copied in a thread, a few milliseconds; and the
write after it starts the log again from its beginning. The file keeps its size and is
written over: bounded by the limit and what one catch-up lets through, never truncated
(shrinking it stalled writers for tens of milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading

DEFAULT_MAX_WAL_BYTES = 64 * 1024 * 1024
_RESTART_FRAMES = 256  # pages left to copy when a restart is asked for (1 MB of 4 KB pages)
_CATCH_UP_PASSES = 8


class WalCheckpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on one database file, from its own thread, and
    says when the WAL should start again from its beginning (`restart_due`, `before_write`)."""

    def __init__(
        self, path: str, *, interval: float = 0.2, max_wal_bytes: int = DEFAULT_MAX_WAL_BYTES
    ) -> None:
        self.path = path
        self.interval = interval
        self.max_wal_bytes = max_wal_bytes
        self.restart_due = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, daemon=True, name=f"wal-checkpoint:{self.path}"
            )
            self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
        try:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            while not self._stop.wait(self.interval):
                self._checkpoint(conn, page)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection, page: int) -> None:
        """A passive checkpoint; when the log in use (`page`-byte frames) is over the limit,
        more of them (no pause) until little is left to copy, so that the restart has
        little left to do."""
        for _ in range(_CATCH_UP_PASSES):
            try:
                busy, log, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error:  # busy now: next time
                return
            if log * page <= self.max_wal_bytes:  # frames in use since the log last restarted
                return
            if not busy and log - done <= _RESTART_FRAMES:
                break
        self.restart_due = True  # caught up, or the writes outpace it: restart anyway

    def wal_bytes(self) -> int:
        try:
            return os.path.getsize(f"{self.path}-wal")
        except OSError:
            return 0

    async def before_write(self) -> None:
        """Call in a write turn, before writing. When a restart is due, copy what is left of
        the log into the database, in a thread, so that this write starts the log again
        from its beginning (the file is reused, not grown); a write of this process
        meanwhile would have added frames to copy."""
        if self.restart_due:
            self.restart_due = False
            await asyncio.to_thread(self._finish_checkpoint)

    def _finish_checkpoint(self) -> None:
        conn = sqlite3.connect(self.path, timeout=1, check_same_thread=False)
        try:
            # busy (the checkpointer thread is at it): it finishes the copy itself
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None

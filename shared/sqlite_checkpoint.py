"""WAL checkpoints off the event loop, and a WAL that does not grow without bound.

With SQLite running inline on the loop (see `sqlite_inline`), SQLite's automatic
checkpoints would fsync on the loop: stalls of several milliseconds every few hundred
commits. Automatic checkpoints are turned off and a thread checkpoints instead.

A passive checkpoint copies the frames that were in the WAL when it began; under steady
writes new frames keep coming, the checkpoint never catches up with the end of the log,
and SQLite never starts writing the WAL from its beginning again: the file grows for as
long as the writes go on (hundreds of megabytes a minute under load). So once the WAL
outgrows a limit, the next writer, in its write turn (no other writer of this process can
start), runs a truncating checkpoint in a thread: what the last passive one left is little,
so the turn is short, and the WAL starts again from empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading

DEFAULT_MAX_WAL_BYTES = 64 * 1024 * 1024


class WalCheckpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on one database file, from its own thread, and
    says when the WAL should be restarted (`restart_due`, see `restart_wal`)."""

    def __init__(
        self, path: str, *, interval: float = 1.0, max_wal_bytes: int = DEFAULT_MAX_WAL_BYTES
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
            while not self._stop.wait(self.interval):
                with contextlib.suppress(sqlite3.Error):  # busy now: next time
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self.restart_due = self.wal_bytes() > self.max_wal_bytes
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def wal_bytes(self) -> int:
        try:
            return os.path.getsize(f"{self.path}-wal")
        except OSError:
            return 0

    async def restart_wal(self) -> None:
        """Checkpoint the rest of the WAL and truncate it to nothing, in a thread. Call it in
        a write turn: a write of this process meanwhile would keep the WAL from restarting."""
        self.restart_due = False
        await asyncio.to_thread(self._truncate)

    def _truncate(self) -> None:
        conn = sqlite3.connect(self.path, timeout=1, check_same_thread=False)
        try:
            # a reader holding an old snapshot makes it give up: the next turn tries again
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None

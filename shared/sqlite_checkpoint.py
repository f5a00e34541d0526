"""WAL checkpoints off the event loop.

With SQLite running inline on the loop (see `sqlite_inline`), SQLite's automatic
checkpoints would fsync on the loop: stalls of several milliseconds every few hundred
commits. Automatic checkpoints are turned off and this thread checkpoints instead.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading


class WalCheckpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on one database file, from its own thread."""

    def __init__(self, path: str, *, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
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
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None

"""Import rows validated on another core while this process writes the previous batch.

Decoding and validating a row (`LeadCapture`: email, domain, country and phone
normalization) is about as costly as capturing it. The service keeps a small process pool
for it, started with the service (in the background: a spawned process takes about a
second to import what validation needs) and stopped with it. Until the pool has started,
and if it ever breaks, rows are validated here: same function, same answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import structlog

from services.intake.importing import (
    ImportedLead,
    ParsedRow,
    Record,
    RowError,
    RowPolicy,
    validate_records,
)
from shared.runtime import ServiceRuntime
from shared.settings.services import IntakeSettings

log = structlog.get_logger(__name__)

STATE_KEY = "import_validator"


class ImportValidator:
    """Validates batches of import records, in `processes` worker processes (0: inline).

    A service worker: `run()` starts the pool, lives as long as the service and shuts the
    pool down.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._ready: Future[list[ParsedRow]] | None = None
        self._stopped = asyncio.Event()

    @classmethod
    def of(cls, runtime: ServiceRuntime) -> ImportValidator:
        """The runtime's validator (created on first use if the service did not make one)."""
        validator = runtime.state.get(STATE_KEY)
        if validator is None:
            settings = runtime.settings
            processes = (
                settings.import_parse_processes if isinstance(settings, IntakeSettings) else 0
            )
            validator = runtime.state[STATE_KEY] = cls(processes)
        assert isinstance(validator, ImportValidator)
        return validator

    async def validate(
        self, batch: Sequence[Record], policy: RowPolicy = RowPolicy()
    ) -> list[ParsedRow]:
        """The batch's rows, in order; in the pool once it runs, else here."""
        pool = self._started_pool()
        if pool is None:
            return validate_records(batch, policy)
        try:
            packed = await asyncio.get_running_loop().run_in_executor(
                pool, validate_packed, list(batch), policy
            )
        except BrokenProcessPool:
            log.warning("import validation pool broke; validating in process")
            self._discard()
            return validate_records(batch, policy)
        return unpack(packed)

    @property
    def starting_or_running(self) -> bool:
        """Whether the pool has been started (it may still be importing) and not stopped."""
        return self._pool is not None

    async def started(self) -> bool:
        """Start the pool if it is not running and wait for it; False: rows stay here."""
        if self._started_pool() is None and self._ready is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(self._ready)
        return self._started_pool() is not None

    def _started_pool(self) -> ProcessPoolExecutor | None:
        """The pool if it is up; starts it (in the background) on first use."""
        if self.processes <= 0 or self._stopped.is_set():
            return None
        if self._pool is None:
            # `spawn`: the service has threads (database, bus), which a forked child would
            # inherit in whatever state they were in.
            self._pool = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_ignore_interrupts,
            )
            self._ready = self._pool.submit(validate_packed, [])  # imports happen there
        assert self._ready is not None
        if not self._ready.done():
            return None  # still starting: meanwhile, rows are validated here
        if (failure := self._ready.exception()) is not None:
            log.warning("import validation pool failed to start", error=repr(failure))
            self._discard()
            return None
        return self._pool

    def _discard(self) -> None:
        pool, self._pool, self._ready = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    async def run(self) -> None:
        # Start the pool now rather than on the first import, which would otherwise spend
        # its first second or so validating rows here as well as writing them (a 50,000-row
        # import ran ~5-8% slower).
        self._started_pool()
        try:
            await self._stopped.wait()
        except asyncio.CancelledError:  # (the service's stop gave up waiting, or start failed)
            self._stopped.set()
            self._discard()  # the process exits without being waited for
            raise
        pool, self._pool, self._ready = self._pool, None, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def stop(self) -> None:
        self._stopped.set()


def _ignore_interrupts() -> None:
    """In the pool's process: Ctrl+C in a terminal reaches the whole process group, and the
    service stops the pool itself (the worker would die with a traceback, and the pool
    break while the service still shuts down)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# Between the processes rows travel as tuples of builtins: unpickling those is several
# times cheaper than unpickling dataclass instances, and this side pays for it.
_Packed = tuple[int, tuple[Any, ...] | None, tuple[tuple[str, str], ...]]


def validate_packed(batch: list[Record], policy: RowPolicy = RowPolicy()) -> list[_Packed]:
    """`validate_records` in the pool, with its rows packed for the trip back."""
    return [
        (
            row.line,
            None
            if row.lead is None
            else (
                row.lead.email,
                row.lead.source,
                row.lead.channel,
                row.lead.campaign,
                row.lead.visitor_id,
                row.lead.external_ids,
                row.lead.fields,
                row.lead.account,
                row.lead.captured,
                row.lead.national_phone,
            ),
            tuple((e.field, e.reason) for e in row.errors),
        )
        for row in validate_records(batch, policy)
    ]


def unpack(packed: list[_Packed]) -> list[ParsedRow]:
    """The rows `validate_records` returned in the pool."""
    return [
        ParsedRow(line, _lead(lead), ())
        if not errors
        else ParsedRow(line, _lead(lead), tuple(RowError(line, n, r) for n, r in errors))
        for line, lead, errors in packed
    ]


def _lead(packed: tuple[Any, ...] | None) -> ImportedLead | None:
    return None if packed is None else ImportedLead._make(packed)

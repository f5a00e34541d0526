"""How a service process runs: its event loop, its HTTP server and the garbage collector's
settings, applied where it starts (`handoff serve`, `handoff dev`)."""

from __future__ import annotations

import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn
import uvloop

T = TypeVar("T")

# uvicorn's own fast implementations, named rather than left to its "auto" (which silently
# falls back to the pure-Python ones when these are not installed): uvloop's event loop and
# httptools' HTTP parser. They serve 27-40% more webhooks per worker than the asyncio loop
# with h11 (bench/README.md); everything in the process, consumers and relays included,
# runs on that loop.
EVENT_LOOP = "uvloop"
HTTP_PARSER = "httptools"


def serve_http(application: Any, *, host: str, port: int) -> None:
    """Serve an ASGI application until SIGINT/SIGTERM, as every handoff server does: one
    process, uvloop and httptools, no access log (requests are counted in `/metrics`),
    and up to 20 s to finish the requests in flight on shutdown."""
    uvicorn.run(
        application,
        host=host,
        port=port,
        loop=EVENT_LOOP,
        http=HTTP_PARSER,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )


def run_on_service_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on the event loop services run on (uvloop), for
    processes that measure or drive services outside uvicorn."""
    return uvloop.run(main)


def tune_collector(young_threshold: int) -> None:
    """Run the cyclic garbage collector's young-generation pass after `young_threshold`
    net allocations instead of Python's 700; 0 keeps Python's defaults.

    A service allocates a few hundred objects for each event or request, nearly all freed
    at once by reference counting. At 700 the collector ran every few events and walked,
    again and again, whatever was young and still alive: a relay's batch of rows, a
    consumer's batch of records, a webhook batch (the relay alone: 13-15 -> 9-10 µs of CPU
    an event at 100,000). Garbage in reference cycles waits longer to be freed; the older
    generations keep their own thresholds.
    """
    if young_threshold:
        _young, middle, old = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, old)


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, the app, its settings and caches)
    out of the collector's view: full collections no longer walk it (each took tens of
    milliseconds of a busy loop). Call once, after start-up, before serving."""
    gc.collect()
    gc.freeze()


def settle_for_serving(young_threshold: int) -> None:
    """What a process does once started, before it serves: `tune_collector` and
    `freeze_startup_objects`."""
    tune_collector(young_threshold)
    freeze_startup_objects()

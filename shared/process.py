"""Tuning of a service process, applied where it starts (`handoff serve`, `handoff dev`)."""

from __future__ import annotations

import gc


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

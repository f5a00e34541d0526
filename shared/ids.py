"""Identifiers that must be unique, not secret: event ids, trace and span ids.

`uuid.uuid4()` and `secrets` read the operating system's random source on every call, a
system call for each id; ids made for every event are drawn instead from a generator
seeded from that source, as OpenTelemetry's id generator does. It is an instance of our
own (tests may seed the global `random`), reseeded in a forked child so that parent and
child never draw the same sequence.
"""

from __future__ import annotations

import os
import random
import uuid

_rng = random.Random(os.urandom(32))


def _reseed() -> None:
    _rng.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


def random_uuid() -> uuid.UUID:
    """A random (version 4) UUID."""
    return uuid.UUID(int=_rng.getrandbits(128), version=4)


def random_hex(bits: int) -> str:
    """`bits` random bits as lower-case hex, never all zeros (W3C trace context forbids it)."""
    while True:
        value = _rng.getrandbits(bits)
        if value:
            return f"{value:0{bits // 4}x}"

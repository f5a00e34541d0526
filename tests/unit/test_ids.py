"""Ids drawn for every event: valid UUIDv7 event ids and W3C ids, never shared with a fork."""

from __future__ import annotations

import os
import random
import time
import uuid

from shared.ids import time_ordered_uuid

RANDOM_BITS = (1 << 62) - 1 | ((1 << 12) - 1) << 64  # what follows the milliseconds


def test_event_ids_are_version_7_and_distinct() -> None:
    ids = [time_ordered_uuid() for _ in range(10_000)]

    assert len(set(ids)) == len(ids)
    assert {u.version for u in ids} == {7}
    assert {u.variant for u in ids} == {uuid.RFC_4122}


def test_event_ids_follow_the_clock() -> None:
    ids = [time_ordered_uuid() for _ in range(1_000)]
    millis = [u.int >> 80 for u in ids]
    assert millis == sorted(millis)
    assert abs(millis[-1] - time.time_ns() // 1_000_000) < 60_000  # Unix milliseconds


def test_seeding_the_global_random_does_not_repeat_ids() -> None:
    random.seed(7)
    first = time_ordered_uuid().int & RANDOM_BITS
    random.seed(7)
    assert time_ordered_uuid().int & RANDOM_BITS != first


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, time_ordered_uuid().bytes)
        os._exit(0)
    os.close(write)
    child = uuid.UUID(bytes=os.read(read, 16))
    os.waitpid(pid, 0)
    os.close(read)

    # the milliseconds may differ anyway: the random part is what must not repeat
    assert child.int & RANDOM_BITS != time_ordered_uuid().int & RANDOM_BITS

"""Ids drawn for every event: valid version-4 UUIDs and W3C ids, never shared with a fork."""

from __future__ import annotations

import os
import random
import re
import uuid

from shared.ids import random_hex, random_uuid


def test_random_uuids_are_version_4_and_distinct() -> None:
    ids = [random_uuid() for _ in range(10_000)]

    assert len(set(ids)) == len(ids)
    assert {u.version for u in ids} == {4}
    assert {u.variant for u in ids} == {uuid.RFC_4122}


def test_random_hex_has_the_width_asked_for() -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", random_hex(64))
    assert re.fullmatch(r"[0-9a-f]{32}", random_hex(128))


def test_seeding_the_global_random_does_not_repeat_ids() -> None:
    random.seed(7)
    first = random_uuid()
    random.seed(7)
    assert random_uuid() != first


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, random_uuid().bytes)
        os._exit(0)
    os.close(write)
    child = uuid.UUID(bytes=os.read(read, 16))
    os.waitpid(pid, 0)
    os.close(read)

    assert child != random_uuid()

"""Concurrent `handoff tokens create` and `revoke` runs (an operator's script, `handoff dev`
making its admin token) each keep the others' changes."""

from __future__ import annotations

import multiprocessing
import stat
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from shared.auth.token_store import TokenStore

WRITERS = 6
ROUNDS = 5
Done = list[tuple[str, str, bool]]  # (name of the token created, the token, old one revoked?)


def create_and_revoke(path: str, writer: int, start: Barrier, out: Queue[Done | str]) -> None:
    """One `handoff tokens` user: creates its tokens and revokes its old ones, in turns."""
    store = TokenStore(Path(path))
    start.wait()
    try:
        out.put(
            [
                (
                    f"new-{writer}-{n}",
                    store.create(name=f"new-{writer}-{n}", role="viewer"),
                    store.revoke(f"old-{writer}-{n}"),
                )
                for n in range(ROUNDS)
            ]
        )
    except Exception as exc:
        out.put(repr(exc))


def test_concurrent_creates_and_revokes_all_take_effect(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    names = [f"old-{w}-{n}" for w in range(WRITERS) for n in range(ROUNDS)]
    old = [store.create(name=name, role="admin") for name in names]
    spawn = multiprocessing.get_context("spawn")  # real processes, each with its own store
    start, out = spawn.Barrier(WRITERS), spawn.Queue()
    writers = [
        spawn.Process(target=create_and_revoke, args=(str(store.path), w, start, out))
        for w in range(WRITERS)
    ]

    for writer in writers:
        writer.start()
    reports = [out.get(timeout=60) for _ in writers]
    for writer in writers:
        writer.join(timeout=10)

    assert [crash for crash in reports if isinstance(crash, str)] == []
    done = [item for report in reports for item in report]
    assert all(revoked for _name, _token, revoked in done)
    assert [store.verify(token) for token in old] == [None] * len(old)
    assert [getattr(store.verify(token), "id", None) for _n, token, _r in done] == [
        name for name, _t, _r in done
    ]
    assert sorted(r.name for r in store.records()) == sorted(name for name, _t, _r in done)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.json", "tokens.json.lock"]

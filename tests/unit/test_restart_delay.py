"""How long a service waits before restarting a consumer that failed, and that a stop
does not wait for it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from shared import runtime as runtime_module
from shared.bus.local import LocalBus
from shared.runtime import ServiceRuntime, restart_delay
from shared.service_app import service_definition
from shared.settings.loading import load_settings


def test_the_delay_doubles_while_the_consumer_keeps_failing_up_to_its_most() -> None:
    delays, delay = [], None
    for _ in range(9):
        delay = restart_delay(delay, ran_for=0.1)
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_consumer_that_had_recovered_is_restarted_soon_after_its_next_failure() -> None:
    assert restart_delay(30.0, ran_for=3600.0) == 0.5  # ran an hour: a new outage
    assert restart_delay(30.0, ran_for=29.0) == 30.0  # failed again within the delay


async def test_a_stop_ends_a_failed_consumers_wait_to_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_module, "restart_delay", lambda _delay, ran_for: 30.0)
    runtime = ServiceRuntime(
        definition=service_definition("intake"),
        settings=load_settings("intake", data_dir=tmp_path, env="dev"),
        bus=LocalBus(tmp_path / "events.db"),
    )
    runs = 0

    class Failing:
        async def run(self) -> None:
            nonlocal runs
            runs += 1
            raise RuntimeError("database away")

    supervising = asyncio.create_task(runtime._supervise(Failing()))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)  # failed once, now waiting 30 s to restart
    began = time.monotonic()
    await runtime.stop()
    await asyncio.wait_for(supervising, timeout=2)

    assert runs == 1
    assert time.monotonic() - began < 2

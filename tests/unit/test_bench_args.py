"""The benchmarks refuse counts and durations they cannot run with, before running anything."""

from __future__ import annotations

import os
import socket
import time
from argparse import Namespace
from collections.abc import Callable, Sequence

import pytest

from bench import bus, intake
from bench.common import listener_pid, settle

Parser = Callable[[Sequence[str]], Namespace]


@pytest.mark.parametrize(
    ("parse", "argv", "says"),
    [
        (bus.parse_args, ["--events", "0"], "argument --events: must be at least 1, got 0"),
        (bus.parse_args, ["--rounds", "-1"], "argument --rounds: must be at least 1, got -1"),
        (bus.parse_args, ["--writers", "two"], "argument --writers: 'two' is not a whole number"),
        (bus.parse_args, ["--warmup", "-5"], "argument --warmup: must be at least 0, got -5"),
        (bus.parse_args, ["--rate", "0"], "argument --rate: must be greater than 0, got 0"),
        (
            bus.parse_args,
            ["--paced-seconds", "nan"],
            "argument --paced-seconds: 'nan' is not a finite number",
        ),
        (
            bus.parse_args,
            ["--relay-linger-ms", "-1"],
            "argument --relay-linger-ms: must be at least 0, got -1",
        ),
        (bus.parse_args, ["--settle", "-0.1"], "argument --settle: must be 0 or more, got -0.1"),
        (
            intake.parse_args,
            ["--seconds", "0"],
            "argument --seconds: must be greater than 0, got 0",
        ),
        (
            intake.parse_args,
            ["--warmup-seconds", "-1"],
            "argument --warmup-seconds: must be 0 or more, got -1",
        ),
        (
            intake.parse_args,
            ["--concurrency", "0"],
            "argument --concurrency: must be at least 1, got 0",
        ),
        (
            intake.parse_args,
            ["--import-rows", "1e3"],
            "argument --import-rows: '1e3' is not a whole number",
        ),
        (
            intake.parse_args,
            ["--drain-timeout", "inf"],
            "argument --drain-timeout: 'inf' is not a finite number",
        ),
    ],
)
def test_a_benchmark_refuses_what_it_cannot_run(
    parse: Parser, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_the_bus_benchmark_takes_no_warm_up() -> None:
    args = bus.parse_args(["--warmup", "0", "--relay-linger-ms", "0", "--rate", "2500.5"])
    assert (args.warmup, args.relay_linger_ms, args.rate) == (0, 0, 2500.5)


def test_the_intake_benchmark_takes_no_warm_up() -> None:
    args = intake.parse_args(["--warmup-seconds", "0", "--seconds", "0.5"])
    assert (args.warmup_seconds, args.seconds) == (0.0, 0.5)


def test_the_bus_benchmark_may_start_each_burst_at_once() -> None:
    assert bus.parse_args(["--settle", "0"]).settle == 0.0
    assert bus.parse_args([]).settle == 0.15


def test_the_process_listening_on_a_port_is_found() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert listener_pid(f"127.0.0.1:{port},elsewhere:9092") == os.getpid()
    assert listener_pid(f"127.0.0.1:{port}") is None  # nobody listens there now


async def test_settling_ends_when_the_machine_is_quiet_or_the_limit_passes() -> None:
    started = time.perf_counter()
    waited = await settle(below=1.01, window_s=0.01, limit_s=5)  # always quiet enough
    assert waited < 1 and time.perf_counter() - started < 1
    waited = await settle(below=-1, window_s=0.01, limit_s=0.1)  # never quiet enough
    assert 0.1 <= waited < 2

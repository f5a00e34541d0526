"""The benchmarks refuse counts and durations they cannot run with, before running anything."""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Callable, Sequence

import pytest

from bench import bus, intake

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

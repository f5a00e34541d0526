"""The CLI's failures are one `error:` line and exit code 2, never a traceback: an
unreachable database, a port already taken, a file it cannot write."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from shared.cli import app, serving

UNREACHABLE = "postgresql://handoff:s3cret@127.0.0.1:1/leads"  # nothing listens on port 1


@pytest.fixture(autouse=True)
def _logging_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # `serve` and `dev` configure logging for the process: under CliRunner that would bind
    # its captured stderr, closed once the command returns, and later tests would log to it
    monkeypatch.setattr(serving, "configure_logging", lambda **_: None)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("DATABASE_URL", "HANDOFF_DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HANDOFF_DATA_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "routing"],
        ["serve", "routing", "--port", "0"],
        ["serve", "routing", "--port", "0", "--no-migrate"],
    ],
)
def test_an_unreachable_database_is_one_line_naming_it_without_its_password(
    command: list[str], environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)

    result = invoke(*command)

    assert_one_error_line(result, "DATABASE_URL=", "127.0.0.1:1/leads", "connection refused")
    assert "s3cret" not in result.output


def test_an_unresolvable_database_host_is_one_line(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://handoff:s3cret@no-such-host.invalid/leads")

    result = invoke("migrate", "routing")

    assert_one_error_line(result, "DATABASE_URL=", "no-such-host.invalid")
    assert "s3cret" not in result.output


def test_dev_on_a_port_in_use_fails_before_announcing_anything(
    environment: Path, taken_port: int
) -> None:
    result = invoke("dev", "--port", str(taken_port), "--data-dir", str(environment))

    assert_one_error_line(result, f"127.0.0.1:{taken_port}", "already in use")
    assert "token" not in result.output
    assert not (environment / "dev-admin-token").exists()
    assert not (environment / "routing.db").exists()  # nothing migrated either


def test_serve_on_a_port_in_use_fails_before_migrating(environment: Path, taken_port: int) -> None:
    result = invoke("serve", "routing", "--port", str(taken_port))

    assert_one_error_line(result, f"127.0.0.1:{taken_port}", "already in use")
    assert not (environment / "routing.db").exists()


def test_asyncapi_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "asyncapi.json"

    result = invoke("asyncapi", "--output", str(target))

    assert_one_error_line(result, str(target), "No such file or directory")

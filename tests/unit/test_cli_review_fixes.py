"""The `handoff` command does what its user expects, or refuses in one line saying why:
tokens where the running services read them, only the settings a command uses, no silent
downgrade, a clean refusal for a busy or broken local log, a broken SQLite file or a bad
port or data directory, bracketed IPv6 URLs, an import's failures in its exit status, and
no manager without a team."""

from __future__ import annotations

import fcntl
import re
import shlex
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from shared.auth.token_store import TokenStore
from shared.cli import app, import_file, serving

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "postgresql://handoff:s3cret@127.0.0.1:1/leads"  # nothing listens on port 1


@pytest.fixture(autouse=True)
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A dev environment of nothing but a data directory; nothing is ever served."""
    for name in (
        "DATABASE_URL",
        "HANDOFF_DATABASE_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "HANDOFF_KAFKA_BOOTSTRAP_SERVERS",
        "HANDOFF_ENV",
        "HANDOFF_SECRET_KEY",
        "HANDOFF_TOKENS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HANDOFF_DATA_DIR", str(tmp_path))
    # (`serve`/`dev` would bind logging to CliRunner's stderr, closed once they return)
    monkeypatch.setattr(serving, "configure_logging", lambda **_: None)
    monkeypatch.setattr(serving, "serve_http", _must_not_serve)
    return tmp_path


def _must_not_serve(application: Any, *, host: str, port: int) -> None:
    raise AssertionError(f"served on {host}:{port}")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_error_line(result: Result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def usage_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    for fragment in fragments:
        assert fragment in text, text


def readme_commands(fragment: str) -> list[str]:
    """The README's shell commands containing `fragment` (continuation lines joined)."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    return [line for line in text.splitlines() if fragment in line and "handoff" in line]


def revision_of(database: Path) -> str:
    with sqlite3.connect(database) as conn:
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(revision)


# 1. the README's token commands write the files the services read


def test_the_readmes_token_commands_write_the_file_make_dev_and_make_up_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HANDOFF_DATA_DIR")
    up_sh = (REPO / "deploy/local/up.sh").read_text()
    assert 'TOKENS_FILE="$STACK_DIR/tokens.json"' in up_sh
    assert 'HANDOFF_TOKENS_FILE="$TOKENS_FILE"' in up_sh
    lib_sh = (REPO / "deploy/local/lib.sh").read_text()
    assert 'HANDOFF_LOCAL_DIR="${HANDOFF_LOCAL_DIR:-$HANDOFF_REPO_ROOT/.local}"' in lib_sh
    read_by = {"make dev": Path(".handoff/tokens.json"), "make up": Path(".local/tokens.json")}
    commands = readme_commands("tokens create")

    for stack, tokens_file in read_by.items():
        [command] = [c for c in commands if f"`{stack}`" in c]
        words = shlex.split(command.split("#")[0])
        env = dict(w.split("=", 1) for w in words[: words.index(".venv/bin/handoff")])
        created = CliRunner().invoke(app, words[words.index("tokens") :], env=env)

        assert created.exit_code == 0, (stack, created.output)
        assert TokenStore(tokens_file).verify(created.stdout.strip()) is not None, stack


# 2. a command needs only the settings it uses


def test_tokens_outside_dev_need_no_service_settings(environment: Path) -> None:
    result = CliRunner().invoke(
        app, ["tokens", "create", "--role", "viewer", "--name", "crm"], env={"HANDOFF_ENV": "prod"}
    )

    assert result.exit_code == 0, result.output
    assert TokenStore(environment / "tokens.json").verify(result.stdout.strip()) is not None


def test_migrate_outside_dev_needs_only_a_database_url() -> None:
    result = CliRunner().invoke(
        app, ["migrate", "intake"], env={"HANDOFF_ENV": "prod", "DATABASE_URL": UNREACHABLE}
    )

    one_error_line(result, "DATABASE_URL=", "connection refused")  # it got as far as trying


def test_migrate_outside_dev_without_a_database_url_names_it() -> None:
    result = CliRunner().invoke(app, ["migrate", "intake"], env={"HANDOFF_ENV": "prod"})

    one_error_line(result, "DATABASE_URL", "PostgreSQL database is required outside dev")


# 3. migrate only upgrades


@pytest.mark.parametrize("older", ["0002", "base"])
def test_migrating_to_a_revision_the_database_is_past_is_refused(
    environment: Path, older: str
) -> None:
    assert invoke("migrate", "intake").exit_code == 0
    head = revision_of(environment / "intake.db")

    result = invoke("migrate", "intake", "--revision", older)

    one_error_line(result, f"intake is at {head}, past {older}", "only upgrades")
    assert revision_of(environment / "intake.db") == head


def test_migrating_step_by_step_still_upgrades(environment: Path) -> None:
    assert invoke("migrate", "intake", "--revision", "0002").exit_code == 0

    result = invoke("migrate", "intake", "--revision", "0003")

    assert result.exit_code == 0, result.output
    assert revision_of(environment / "intake.db") == "0003"


# 4. serve refuses a busy local log and an unreachable Kafka before starting


def test_serve_on_a_local_event_log_another_process_holds_is_one_line(environment: Path) -> None:
    with (environment / "events.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `handoff dev` does

        result = invoke("serve", "routing", "--port", "0")

    one_error_line(result, "events.db is in use by another handoff process", "handoff dev")
    assert not (environment / "routing.db").exists()  # before migrating


def test_serve_with_an_unreachable_kafka_is_one_line_naming_the_variable(
    environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")

    result = invoke("serve", "routing", "--port", "0")

    one_error_line(result, "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1", "not reachable")
    assert not (environment / "routing.db").exists()


# 5. a file that is not a SQLite database is named


def test_dev_with_a_database_file_that_is_not_sqlite_names_it(environment: Path) -> None:
    (environment / "qualification.db").write_text("garbage\n")

    result = invoke("dev", "--port", "0", "--data-dir", str(environment))

    one_error_line(result, f"{environment / 'qualification.db'} is not a SQLite database")


def test_dev_with_an_event_log_that_is_not_sqlite_names_it_before_serving(
    environment: Path,
) -> None:
    (environment / "events.db").write_text("garbage\n")

    result = invoke("dev", "--port", "0", "--data-dir", str(environment))

    one_error_line(result, f"{environment / 'events.db'} is not a SQLite database")


def test_migrate_to_a_database_url_that_is_not_sqlite_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken.db").write_text("garbage\n")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'broken.db'}")

    result = invoke("migrate", "intake")

    one_error_line(result, "DATABASE_URL=", f"{tmp_path / 'broken.db'} is not a SQLite database")


# 6. ports and data directories are checked


@pytest.mark.parametrize(("command", "port"), [("dev", "70000"), ("serve", "-1")])
def test_a_port_out_of_range_is_a_usage_error(command: str, port: str) -> None:
    args = [command, "routing"] if command == "serve" else [command]

    result = invoke(*args, "--port", port)

    usage_error(result, "Invalid value for '--port'")


def test_a_data_directory_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")

    result = invoke("dev", "--data-dir", str(tmp_path / "afile"))

    one_error_line(result, "--data-dir", "is a file, not a directory")


@pytest.mark.parametrize("command", [["dev", "--data-dir", "/proc/nope"], ["serve", "routing"]])
def test_a_data_directory_that_cannot_be_made_is_one_line(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOFF_DATA_DIR", "/proc/nope")
    if command[0] == "serve":  # (its database elsewhere: the data directory is the event log's)
        monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'routing.db'}")

    result = invoke(*command, "--port", "0")

    one_error_line(result, "/proc/nope", "cannot create it")


# 7. the announced URLs are real ones


@pytest.mark.parametrize(("host", "shown"), [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")])
def test_dev_announces_the_port_it_serves_on_an_ipv6_host_in_brackets(
    environment: Path, monkeypatch: pytest.MonkeyPatch, host: str, shown: str
) -> None:
    served: list[int] = []
    monkeypatch.setattr(serving, "serve_http", lambda _, *, host, port: served.append(port))

    result = invoke("dev", "--host", host, "--port", "0", "--data-dir", str(environment))

    assert result.exit_code == 0, result.output
    [port] = served
    assert port != 0
    assert f"API docs   http://{shown}:{port}/docs" in result.output


# 8. an import's failures are in its exit status, and no error goes unmentioned


def import_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, summary: dict[str, Any]) -> Result:
    monkeypatch.setattr(import_file, "_upload", lambda *_: summary)
    file = tmp_path / "leads.csv"
    file.write_text("email\n")
    return invoke("import", str(file), "--token", "t")


def test_an_import_with_failed_rows_exits_1_after_its_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = [{"line": 3, "field": "email", "reason": "not an email address"}]
    summary = {"rows": 3, "created": 2, "updated": 0, "unchanged": 0, "failed": 1}

    result = import_with(tmp_path, monkeypatch, {**summary, "errors": errors})

    assert result.exit_code == 1, result.output
    assert "line 3: email: not an email address" in result.output
    assert "1 of 3 rows failed; the other 2 were imported" in result.output


def test_an_import_without_failures_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = {"rows": 2, "created": 2, "updated": 0, "unchanged": 0, "failed": 0, "errors": []}

    assert import_with(tmp_path, monkeypatch, summary).exit_code == 0


def test_errors_not_shown_are_counted_even_when_rows_have_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = [{"line": 2 + i // 2, "field": f"f{i % 2}", "reason": "bad"} for i in range(30)]
    summary = {"rows": 15, "created": 0, "updated": 0, "unchanged": 0, "failed": 15}

    result = import_with(tmp_path, monkeypatch, {**summary, "errors": errors})

    assert result.output.count(": bad") == 20
    assert "10 more errors not shown" in result.output
    assert result.exit_code == 1


@pytest.mark.parametrize(
    ("kept", "says"),
    [(1, "and more errors the server did not keep"), (0, "the server kept no errors to show")],
)
def test_errors_the_server_did_not_keep_are_mentioned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: int, says: str
) -> None:
    errors = [{"line": 2, "field": "email", "reason": "bad"}][:kept]
    summary = {"rows": 5, "created": 0, "updated": 0, "unchanged": 0, "failed": 5}

    result = import_with(
        tmp_path, monkeypatch, {**summary, "errors": errors, "errors_truncated": True}
    )

    assert says in " ".join(result.output.split())
    assert result.exit_code == 1


# 9. a manager names a team


def test_a_manager_without_a_team_is_a_usage_error(environment: Path) -> None:
    result = invoke("tokens", "create", "--role", "manager", "--name", "ana")

    usage_error(result, "--team", "manager")
    assert not (environment / "tokens.json").exists()


def test_a_manager_with_a_team_is_created_with_it(environment: Path) -> None:
    result = invoke("tokens", "create", "--role", "manager", "--name", "ana", "--team", "sales")

    assert result.exit_code == 0, result.output
    principal = TokenStore(environment / "tokens.json").verify(result.stdout.strip())
    assert principal is not None and principal.team == "sales"

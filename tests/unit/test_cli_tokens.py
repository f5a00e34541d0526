"""`handoff tokens`: a bad token file or name is one line saying what is wrong, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.cli import app


@pytest.fixture
def tokens_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tokens.json"
    monkeypatch.setenv("HANDOFF_TOKENS_FILE", str(path))
    return path


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error:"), output
    assert "Traceback" not in output
    return lines[0]


@pytest.mark.parametrize("command", [["list"], ["revoke", "crm"], ["create", "--role", "viewer"]])
@pytest.mark.parametrize("content", ['{"tokens": [', "[]"])
def test_a_bad_token_file_is_named_with_what_is_wrong_in_one_line(
    tokens_file: Path, command: list[str], content: str
) -> None:
    tokens_file.write_text(content)
    if command[0] == "create":
        command = [*command, "--name", "crm"]

    result = CliRunner().invoke(app, ["tokens", *command])

    assert result.exit_code == 2
    assert str(tokens_file) in one_line_error(result.output)
    assert tokens_file.read_text() == content  # left for its owner to fix


@pytest.mark.parametrize("name", ["", "  ", "crm\tsync", "crm\nsync"])
def test_blank_names_and_names_with_control_characters_are_refused(
    tokens_file: Path, name: str
) -> None:
    result = CliRunner().invoke(app, ["tokens", "create", "--role", "viewer", "--name", name])

    assert result.exit_code == 2
    assert "name" in one_line_error(result.output)
    assert not tokens_file.exists()


def test_listed_names_are_one_tab_separated_column(tokens_file: Path) -> None:
    for name in ("crm", "Ana Souza"):
        created = CliRunner().invoke(app, ["tokens", "create", "--role", "viewer", "--name", name])
        assert created.exit_code == 0, created.output

    listed = CliRunner().invoke(app, ["tokens", "list"])

    assert listed.exit_code == 0
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["crm", "Ana Souza"]

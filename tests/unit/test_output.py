"""Human tables fit the terminal they are printed on (`sparkctl models list` at 80 columns, not
258); piped, they keep every cell whole; `--json` does not depend on either."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkctl.cli import cli, output
from sparkctl.cli.output import print_table

ANSI = re.compile(r"\x1b\[[0-9;]*m")
HEADERS = ["MODEL", "STATUS", "GPU", "CAPABILITIES", "DESCRIPTION"]
ROWS = [
    [
        "jackrong-qwen3.5-35b-a3b-claude-4.6-opus-reasoning-distilled",
        "experimental",
        "0.70",
        "chat, tools",
        "x" * 40,
    ],
    [
        "gpt-oss-20b",
        "validated",
        "0.70 exclusive",
        "chat, tools, reasoning",
        ("OpenAI gpt-oss-20b " * 6).strip(),
    ],
    ["[red]bold[/red]", "validated", "0.10", "embeddings", "a description with [b]markup[/b] in it"],
]


def _on_terminal(monkeypatch: pytest.MonkeyPatch, columns: int) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", str(columns))


@pytest.mark.parametrize("columns", [60, 80, 120, 200])
def test_a_table_fits_the_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], columns: int
) -> None:
    _on_terminal(monkeypatch, columns)
    print_table(HEADERS, ROWS, wrap={"CAPABILITIES", "DESCRIPTION"})
    lines = [ANSI.sub("", line) for line in capsys.readouterr().out.splitlines()]
    assert lines and all(len(line) <= columns for line in lines), lines
    assert lines[0].startswith("MODEL")
    assert "[red]bold[/red]" in "\n".join(lines)  # catalog text is never read as markup


def test_wrapping_columns_give_way_first_and_the_others_stay_whole(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _on_terminal(monkeypatch, 130)
    print_table(HEADERS, ROWS, wrap={"CAPABILITIES", "DESCRIPTION"})
    text = ANSI.sub("", capsys.readouterr().out)
    assert "DESCRIPTION" not in text and "CAPABILITIES" in text  # the rightmost went first
    assert ROWS[0][0] in text and "0.70 exclusive" in text  # the others are whole
    assert "chat, tools," in text and "reasoning" in text  # wrapped, not cut


def test_piped_a_table_keeps_every_cell_whole(capsys: pytest.CaptureFixture[str]) -> None:
    print_table(HEADERS, ROWS, wrap={"CAPABILITIES", "DESCRIPTION"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(ROWS)  # one line per row
    for row, line in zip(ROWS, lines[1:], strict=True):
        assert all(cell in line for cell in row)
    assert not any(line != line.rstrip() for line in lines)


def test_models_list_on_a_narrow_terminal_and_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "sparkctl.toml"
    config.write_text(f'[gateway]\napi_keys_file = "{tmp_path / "keys"}"\n')
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("SPARKCTL_API_KEY", raising=False)
    table = CliRunner().invoke(cli, ["--config", str(config), "models", "list"])
    assert table.exit_code == 0, table.output
    rows = json.loads(CliRunner().invoke(cli, ["--config", str(config), "models", "list", "--json"]).stdout)
    assert len(table.stdout.splitlines()) == 1 + len(rows)  # a pipe: one whole line per model
    assert {"id", "status", "capabilities", "description", "unit"} <= set(rows[0])


@pytest.mark.parametrize(("seconds", "shown"), [(None, "-"), (41.6, "~42s"), (150, "~2m"), (0.2, "~0s")])
def test_an_eta_reads_as_an_estimate(seconds: float | None, shown: str) -> None:
    assert output.eta(seconds) == shown
    if seconds is not None:
        assert output.eta(seconds, guess=True) == shown + "?"  # a guess says so

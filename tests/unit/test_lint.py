"""The tree stays typed (mypy --strict over sparkctl, tests and bench), clean (ruff) and layered
(import-linter's contracts in pyproject.toml: the layers, the pure scheduler, the bare emulator,
no import cycles): part of the test command, so CI keeps them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_mypy_strict() -> None:
    proc = _run("mypy")  # the files and flags are pyproject.toml's
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff() -> None:
    proc = _run("ruff", "check", "sparkctl", "tests", "bench", "containerfiles")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_import_contracts() -> None:
    proc = _run("lint-imports", "--no-cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 6 kept, 0 broken." in proc.stdout, proc.stdout

"""The package stays typed (mypy --strict) and clean (ruff): part of the test command, so CI keeps it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_mypy_strict() -> None:
    proc = subprocess.run(
        [str(BIN / "mypy"), "sparkctl"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff() -> None:
    proc = subprocess.run(
        [str(BIN / "ruff"), "check", "sparkctl", "tests", "bench", "containerfiles"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

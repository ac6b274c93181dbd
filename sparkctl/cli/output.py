"""What the commands print: JSON for machines (`--json`, unchanged whatever the terminal), tables
for people (rich), and times and sizes as people say them.

A table fits the terminal it is printed on: columns named as wrapping wrap at word boundaries,
the others keep their cells whole and the widest are cut with an ellipsis only when nothing else
fits. Piped into another program (no terminal), a table keeps every cell whole on one line, so
grep and awk see what was there.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Collection, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

# A pipe has no width; rows are never cut there.
UNLIMITED = 100_000


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, wrap: Collection[str] = ()) -> None:
    """Aligned columns like `systemctl list-units`. `wrap`: headers of the columns whose text may
    wrap onto further lines on a narrow terminal (descriptions, reasons)."""
    tty = sys.stdout.isatty()
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold" if tty else "", expand=False)
    for header in headers:
        wraps = header in wrap
        table.add_column(header, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    for row in rows:
        table.add_row(*row)
    console = Console(
        width=None if tty else UNLIMITED,
        force_terminal=tty,
        no_color=not tty,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
    )
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())


def human_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def ago(wall: float | None) -> str:
    """A past instant (seconds since the epoch) as "3m ago"."""
    if not wall:
        return "-"
    seconds = time.time() - wall
    return human_duration(abs(seconds)) + (" ago" if seconds >= 0 else "")


def until(wall: float | None) -> str:
    """A coming instant as "in 12m"."""
    if not wall:
        return "-"
    return "in " + human_duration(max(0.0, wall - time.time()))


def tokens(n: int) -> str:
    """Context sizes as people say them: 131072 → 128k, 128000 → 128k, 240000 → 240k."""
    if n % 1000 == 0:
        return f"{n // 1000}k"
    if n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)

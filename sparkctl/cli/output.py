"""What the commands print: JSON for machines (`--json`, unchanged whatever the terminal), tables
for people (rich), and times and sizes as people say them.

A table fits the terminal it is printed on: columns named as wrapping wrap at word boundaries,
the others keep their cells whole and the widest are cut with an ellipsis only when nothing else
fits. Piped into another program (no terminal), a table keeps every cell whole on one line, so
grep and awk see what was there.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Collection, Sequence
from typing import Any

import click
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

# A pipe has no width; rows are never cut there.
UNLIMITED = 100_000
GAP = 2  # cells between two columns
# Padding at the end of a line, before any closing escape sequence (a bold header's).
_TRAILING = re.compile(r"\s+((?:\x1b\[[0-9;]*m)*)$")
WRAP_MIN = 24  # the narrowest a wrapping column gets before it is left out


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, wrap: Collection[str] = ()) -> None:
    """Aligned columns like `systemctl list-units`. `wrap`: headers of the columns whose text may
    wrap onto further lines on a narrow terminal (descriptions, lists), and which give way first:
    on a terminal too narrow even for them at their narrowest, they are left out, rightmost
    first. The other columns keep their cells whole unless nothing else is left to give."""
    tty = sys.stdout.isatty()
    console = Console(
        width=None if tty else UNLIMITED,
        force_terminal=tty,
        no_color=not tty,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=False,
    )
    shown, widths = _fit(headers, rows, set(wrap), console.width)
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold" if tty else "", expand=False)
    for i in shown:
        wraps = headers[i] in wrap
        table.add_column(
            headers[i], width=widths[i], no_wrap=not wraps, overflow="fold" if wraps else "ellipsis"
        )
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    with console.capture() as captured:
        console.print(table)
    for line in captured.get().splitlines():
        click.echo(_TRAILING.sub(r"\1", line))


def _fit(
    headers: Sequence[str], rows: Sequence[Sequence[str]], wrap: set[str], width: int
) -> tuple[list[int], list[int]]:
    """Which columns to show, and each column's width, for a table `width` cells wide."""
    natural = [max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    floor = [
        min(n, max(cell_len(h), WRAP_MIN)) if h in wrap else cell_len(h)
        for n, h in zip(natural, headers, strict=True)
    ]
    shown = list(range(len(headers)))
    widths = list(natural)

    def excess() -> int:
        return sum(widths[i] for i in shown) + GAP * (len(shown) - 1) - width

    # 1. wrapping columns narrow down to their floor, the widest first
    _shrink([i for i in shown if headers[i] in wrap], widths, floor, excess())
    # 2. then they go, rightmost first
    for i in reversed([i for i in shown if headers[i] in wrap]):
        if excess() <= 0:
            break
        shown.remove(i)
    # 3. last, the others are cut (with an ellipsis), the widest first
    _shrink(shown, widths, floor, excess())
    return shown, widths


def _shrink(columns: list[int], widths: list[int], floor: list[int], excess: int) -> None:
    """Take `excess` cells off `columns`, always from the widest, never below its floor."""
    while excess > 0:
        room = [i for i in columns if widths[i] > floor[i]]
        if not room:
            return
        widest = max(room, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1


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


def eta(seconds: float | None, guess: bool = False) -> str:
    """An estimate as "~42s", or "~42s?" when it rests on a guessed load time ("-": none)."""
    if seconds is None:
        return "-"
    return "~" + human_duration(seconds) + ("?" if guess else "")


def tokens(n: int) -> str:
    """Context sizes as people say them: 131072 → 128k, 128000 → 128k, 240000 → 240k."""
    if n % 1000 == 0:
        return f"{n // 1000}k"
    if n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)

"""Reading a Containerfile: its instructions, and the build-context files it copies in.

Only what sparkctl needs of the format: instructions with their continuation lines joined (for
tests and the inputs digest), and the COPY/ADD sources under the context, which decide whether an
image is outdated. Not a full parser: heredocs and variable expansion in sources are not read.
"""

from __future__ import annotations

import json
from pathlib import Path


def instructions(containerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Containerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in containerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def _context_files(source: str, root: Path) -> list[Path]:
    """The files one COPY/ADD source names under `root` (a directory: all of it), resolved; none
    for a source outside the context, and never compiled Python."""
    top = (root / source).resolve()
    if not top.is_relative_to(root.resolve()):
        return []
    candidates = [top] if top.is_file() else sorted(top.rglob("*"))
    return [c for c in candidates if c.is_file() and "__pycache__" not in c.parts and c.suffix != ".pyc"]


def copied_files(containerfile: Path, root: Path) -> list[Path]:
    """The files under `root` (the build context) that `containerfile` COPYs or ADDs, sorted;
    sources of other stages (--from) and compiled Python are not the context's."""
    found: set[Path] = set()
    for word, rest in instructions(containerfile):
        if word not in ("COPY", "ADD") or "--from=" in rest:
            continue
        words = json.loads(rest) if rest.startswith("[") else rest.split()
        sources = [w for w in words if not w.startswith("--")][:-1]  # the last word is the destination
        for source in sources:
            found.update(_context_files(source, root))
    base = root.resolve()
    return sorted((root / c.relative_to(base) for c in found), key=lambda p: p.as_posix())

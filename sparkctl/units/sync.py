"""Writing rendered unit files: atomically, only when changed, and removing the ones sparkctl
rendered earlier for models that are gone or disabled (files it did not render are never touched).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sparkctl.paths import write_atomic
from sparkctl.units.names import MODEL_UNITS_GLOB
from sparkctl.units.render import UnitFile

RENDERED_MARK = "# Rendered by sparkctl from "


@dataclass
class Changes:
    added: list[Path] = field(default_factory=list)
    changed: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def is_rendered(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            return f.readline().startswith(RENDERED_MARK)
    except OSError:
        return False


def sync(files: list[UnitFile], dirs: dict[str, Path]) -> Changes:
    """Make `dirs` (destination → directory) hold exactly the rendered `files` of sparkctl."""
    changes = Changes()
    wanted: dict[Path, str] = {dirs[f.destination] / f.name: f.text for f in files}
    for path, text in sorted(wanted.items()):
        try:
            old = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            old = None
        if old == text:
            changes.unchanged.append(path)
            continue
        write_atomic(path, text)
        (changes.added if old is None else changes.changed).append(path)
    for d in sorted(set(dirs.values())):
        if not d.is_dir():
            continue
        for path in sorted(d.glob(MODEL_UNITS_GLOB)):
            if path not in wanted and path.is_file() and is_rendered(path):
                path.unlink()
                changes.removed.append(path)
    return changes


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write `path` (atomically) unless it already says `text`; True when it was written."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_atomic(path, text, mode)
    return True

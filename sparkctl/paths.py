"""Where sparkctl's own files are (installed from a wheel, or in a source checkout), where the
daemon's admin socket lives, and how sparkctl replaces a file: atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "units" / "templates"
# A source checkout (or an editable install) has models/ beside the package; a wheel carries it
# inside the package (pyproject: force-include).
_IN_WHEEL = PACKAGE_DIR / "_shipped" / "models"
SOURCE_ROOT: Path | None = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").exists() else None
SHIPPED_CATALOG = _IN_WHEEL if _IN_WHEEL.is_dir() else PACKAGE_DIR.parent / "models"
# sparkctl's own units (units/ in the source tree), likewise.
_UNITS_IN_WHEEL = PACKAGE_DIR / "_shipped" / "units"
SHIPPED_UNITS = _UNITS_IN_WHEEL if _UNITS_IN_WHEEL.is_dir() else PACKAGE_DIR.parent / "units"

# Where polkit reads the rule that lets the daemon's user manage the model units.
POLKIT_RULE = Path("/etc/polkit-1/rules.d/50-sparkctl.rules")
# The daemon's local admin socket (sparkctl.socket), where root needs no key; a user's own stack
# (install --user) has it in the user's runtime directory (%t in the socket unit).
ADMIN_SOCKET = Path("/run/sparkctl/sparkctl.sock")
USER_ADMIN_SOCKET_SPECIFIER = "%t/sparkctl/sparkctl.sock"


def user_admin_socket() -> Path | None:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "sparkctl" / "sparkctl.sock" if runtime else None


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace `path` in one rename, so a reader (systemd, the daemon) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

"""Where sparkctl's own files are, installed (wheel) or in a source checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
# A source checkout (or an editable install) has models/ beside the package; a wheel carries it
# inside the package (pyproject: force-include).
_IN_WHEEL = PACKAGE_DIR / "_shipped" / "models"
SOURCE_ROOT: Path | None = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").exists() else None
SHIPPED_CATALOG = _IN_WHEEL if _IN_WHEEL.is_dir() else PACKAGE_DIR.parent / "models"
# sparkctl's own units (units/ in the source tree), likewise.
_UNITS_IN_WHEEL = PACKAGE_DIR / "_shipped" / "units"
SHIPPED_UNITS = _UNITS_IN_WHEEL if _UNITS_IN_WHEEL.is_dir() else PACKAGE_DIR.parent / "units"

"""What one doctor check returns: a `Check`, pass/warn/fail with the detail and the fix.

A failure means sparkctl cannot work as configured; a warning means it works, with a limit worth
knowing. A check is a `CheckFn`: a function of the `Host` and the settings. This module sits below
the check modules and the package's `__init__`, so they share it without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sparkctl.settings import Settings
from sparkctl.tools.doctor.host import Host

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


CheckFn = Callable[[Host, Settings], Check]

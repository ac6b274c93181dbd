"""What a unit's state after a stop says of its engine (sparkctl/core/systemd.py)."""

from __future__ import annotations

import pytest

from sparkctl.core.systemd import UnitStatus


def status(active: str, result: str, exec_main_status: int = 0) -> UnitStatus:
    return UnitStatus("sparkctl-m.service", "loaded", active, "dead", result, 0, exec_main_status, 0)


@pytest.mark.parametrize(
    ("after", "killed"),
    [
        (status("inactive", "success"), False),  # exited on SIGTERM, as asked
        (status("failed", "timeout"), True),  # a process: systemd's TimeoutStopSec= kill
        (status("failed", "exit-code", 137), True),  # a container: podman's --stop-timeout kill
        (status("failed", "exit-code", 1), False),  # it exited, with an error of its own
        (status("failed", "signal"), False),  # it died of a signal before the timeout
        (status("inactive", "timeout"), False),  # (not failed: an old result, not this stop's)
    ],
)
def test_killed_at_stop(after: UnitStatus, killed: bool) -> None:
    assert after.killed_at_stop is killed

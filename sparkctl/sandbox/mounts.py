"""The host mounts of a box, all under its directory DIR: the tmpfs on DIR/run that this side
makes, and whatever stage2.sh mounts there (the overlay root, binds of shared paths).

Every mount and unmount records into DIR/.utab rather than the host's utab, so a box never leaves
an entry behind there.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _env(box_dir: Path) -> dict[str, str]:
    return dict(os.environ, LIBMOUNT_UTAB=str(box_dir / ".utab"))


def mount_run(box_dir: Path) -> None:
    """A fresh tmpfs on DIR/run: the box's /run, where the host reaches its bus and Podman."""
    subprocess.run(
        [
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "mode=0755,nosuid,nodev,size=2g",
            "sparkctl-box-run",
            str(box_dir / "run"),
        ],
        check=True,
        env=_env(box_dir),
    )


def unmount_all(box_dir: Path) -> None:
    """Unmount everything at or under DIR, deepest first; lazily where a mount is still busy."""
    out = subprocess.run(
        ["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False
    ).stdout
    prefix = str(box_dir)
    mounts = [m for m in out.splitlines() if m == prefix or m.startswith(prefix + "/")]
    env = _env(box_dir)
    for m in sorted(mounts, key=len, reverse=True):
        if subprocess.run(["umount", m], env=env, capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", m], env=env, capture_output=True, check=False)

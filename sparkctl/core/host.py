"""Facts about this machine the supervisor needs: its memory (the gate before a start) and what a
failed unit's own processes said last (the journal). Reading them is I/O: the supervisor calls
these off the event loop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sparkctl.probe import PREFIX as PROBE_PREFIX

MEMINFO = Path("/proc/meminfo")


def read_meminfo(path: Path = MEMINFO) -> dict[str, int]:
    """Fields of /proc/meminfo in bytes."""
    out = {}
    for line in path.read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


async def last_log_line(unit: str, user: bool) -> str:
    """What a failed unit's own processes said last (their error, as often as not) — not systemd's
    lines about the unit — if the journal is readable (the daemon is in group systemd-journal)."""
    argv = ["journalctl", "--no-pager", "-o", "json", "-n", "30", "-u", unit]
    if user:
        argv.insert(1, "--user")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 5)
    except (OSError, TimeoutError):
        return ""
    engine = probe = ""
    for line in out.decode("utf-8", "replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = entry.get("MESSAGE")
        if entry.get("_PID") == "1" or not isinstance(message, str) or not message.strip():
            continue
        # The readiness probe only reports that the engine died; the engine says why. (The probe
        # may be gone before journald reads its _CMDLINE: its lines carry its prefix too.)
        if message.startswith(PROBE_PREFIX) or " probe " in f" {entry.get('_CMDLINE', '')} ":
            probe = message.strip()
        else:
            engine = message.strip()
    return (engine or probe)[:300]

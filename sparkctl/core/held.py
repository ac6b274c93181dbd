"""Other nodes' reservations of this one (#15), kept across a restart of the daemon in
`runtime.state_dir/reservations.json`: a restarted daemon adopts the worker part that runs and
holds the node for its owner again, rather than handing the node to the first local request
while the owner's model still runs across it. The owner's next renewal finds it held.

One small JSON file, written whole and atomically, with a version; each reservation's end is
wall-clock time, so one that ran out while the daemon was down is dropped. A file that does not
parse is ignored with a warning (its reservations run out; the owners reserve again). Blocking:
call it off the event loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sparkctl.paths import write_atomic

log = logging.getLogger("sparkctl.supervisor")
FILE = "reservations.json"
VERSION = 1


@dataclass(frozen=True, slots=True)
class Held:
    model: str
    holder: str
    until: float  # seconds since the epoch


def load(state_dir: Path, now: float | None = None) -> list[Held]:
    """The reservations kept, those not run out by `now` (wall clock)."""
    path = state_dir / FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"not a version {VERSION} record of reservations")
        held = [Held(str(r["model"]), str(r["holder"]), float(r["until"])) for r in data["reservations"]]
    except FileNotFoundError:
        return []
    except OSError as e:
        log.warning("cannot read %s (%s): reservations of this node are not held again", path, e.strerror)
        return []
    except (ValueError, KeyError, TypeError) as e:
        log.warning("%s: %s; reservations of this node are not held again", path, e)
        return []
    now = time.time() if now is None else now
    return [h for h in held if h.until > now]


def text(held: Iterable[Held]) -> str:
    records = [{"model": h.model, "holder": h.holder, "until": round(h.until, 3)} for h in held]
    return json.dumps({"version": VERSION, "reservations": records}, indent=1) + "\n"


def save(state_dir: Path, content: str) -> None:
    """Write `content` (taken on the loop: `text(...)`); a failure is logged and the reservations
    stay held in memory only."""
    try:
        write_atomic(state_dir / FILE, content, 0o640)
    except OSError as e:
        log.warning(
            "cannot write %s (%s): reservations are held in memory only", state_dir / FILE, e.strerror
        )

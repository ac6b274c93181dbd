"""What the daemon learns about its models and keeps across restarts (`runtime.state_dir`):
per model, the recent load times (from the start's request to ready, and from the engine's exec to
ready as systemd timed it), stop times, start failures, the memory it was last seen to take once
ready, and when it was last used.

One small JSON file, `learned.json`, written whole and atomically (a crash mid-write leaves the
previous file), with a version: a file from a newer sparkctl, or one that does not parse, is set
aside with a warning (`learned.json.corrupt-TIME`) and learning starts afresh; never fatal. An
older version is read and migrated (written back as the current one at the next save). A
directory the daemon cannot write (a hand-run `sparkctl serve`) keeps the learning in memory.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparkctl.paths import write_atomic

log = logging.getLogger("sparkctl.supervisor")
VERSION = 2  # 2 added exec_loads, stops, last_used (version 1 files are read as they are)
READS = (1, 2)
FILE = "learned.json"
KEPT_LOADS = 10  # the recent load times a typical one is taken from
MAX_SECONDS = 7 * 86400.0  # no load or stop takes a week: a file saying so is not believed


@dataclass
class ModelRecord:
    loads: list[float] = field(default_factory=list)  # seconds from a start's request to ready
    exec_loads: list[float] = field(default_factory=list)  # from the engine's exec to ready
    stops: list[float] = field(default_factory=list)  # seconds from a stop's request to stopped
    failures: int = 0
    memory_bytes: int | None = None  # what it was last seen to take once ready
    last_used: float | None = None  # seconds since the epoch: the end of its last request

    @property
    def typical_load(self) -> float | None:
        return statistics.median(self.loads) if self.loads else None

    @property
    def typical_exec_load(self) -> float | None:
        return statistics.median(self.exec_loads) if self.exec_loads else None

    @property
    def typical_stop(self) -> float | None:
        return statistics.median(self.stops) if self.stops else None

    def to_json(self) -> dict[str, Any]:
        return {
            "loads": [round(s, 3) for s in self.loads],
            "exec_loads": [round(s, 3) for s in self.exec_loads],
            "stops": [round(s, 3) for s in self.stops],
            "failures": self.failures,
            "memory_bytes": self.memory_bytes,
            "last_used": round(self.last_used, 3) if self.last_used is not None else None,
        }

    @classmethod
    def from_json(cls, data: Any) -> ModelRecord:
        if not isinstance(data, dict):
            raise ValueError("a model's record is not an object")
        failures = data.get("failures", 0)
        if not _count(failures):
            raise ValueError("failures must be a count")
        memory = data.get("memory_bytes")
        if memory is not None and not _count(memory):
            raise ValueError("memory_bytes must be a count of bytes")
        used = data.get("last_used")
        if used is not None and not (_number(used) and used >= 0):
            raise ValueError("last_used must be seconds since the epoch")
        return cls(
            _seconds(data, "loads"),
            _seconds(data, "exec_loads"),
            _seconds(data, "stops"),
            failures,
            memory,
            float(used) if used is not None else None,
        )


def _number(value: Any) -> bool:
    """A JSON number, finite (json reads `Infinity` and `NaN`), and not a boolean (an int in Python)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seconds(data: dict[str, Any], key: str) -> list[float]:
    values = data.get(key, [])
    if not isinstance(values, list) or not all(_number(s) and 0 <= s <= MAX_SECONDS for s in values):
        raise ValueError(f"{key} must be a list of seconds")
    return [float(s) for s in values][-KEPT_LOADS:]


class Learned:
    """The records, by model id. Mutated by the owner's subscriber; saved from a worker thread."""

    def __init__(self, path: Path | None, records: dict[str, ModelRecord] | None = None) -> None:
        self.path = path
        self.records = records or {}

    @classmethod
    def load(cls, state_dir: Path) -> Learned:
        path = state_dir / FILE
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except OSError as e:
            log.warning("cannot read %s (%s): learning starts afresh, in memory", path, e.strerror)
            return cls(None)
        try:
            return cls(path, _parse(text))
        except ValueError as e:
            aside = path.with_name(f"{FILE}.corrupt-{int(time.time())}")
            try:
                path.rename(aside)
                log.warning("%s: %s; set aside as %s, learning starts afresh", path, e, aside.name)
            except OSError:
                log.warning("%s: %s; learning starts afresh", path, e)
            return cls(path)

    def record(self, model: str) -> ModelRecord:
        return self.records.setdefault(model, ModelRecord())

    def loaded(self, model: str, seconds: float) -> None:
        _keep(self.record(model).loads, seconds)

    def exec_loaded(self, model: str, seconds: float) -> None:
        _keep(self.record(model).exec_loads, seconds)

    def stopped(self, model: str, seconds: float) -> None:
        _keep(self.record(model).stops, seconds)

    def typical_load(self, model: str) -> float | None:
        record = self.records.get(model)
        return record.typical_load if record else None

    def text(self) -> str:
        data = {"version": VERSION, "models": {m: r.to_json() for m, r in sorted(self.records.items())}}
        return json.dumps(data, indent=1) + "\n"

    def save(self, text: str) -> None:
        """Write `text` (taken on the loop: `self.text()`) to the file; a failure is logged, once
        per failure, and the records stay in memory."""
        if self.path is None:
            return
        try:
            write_atomic(self.path, text, 0o640)
        except OSError as e:
            log.warning("cannot write %s (%s): what was learned stays in memory", self.path, e.strerror)
            self.path = None


def _keep(values: list[float], seconds: float) -> None:
    values.append(seconds)
    del values[:-KEPT_LOADS]


def read_records(text: str) -> dict[str, ModelRecord]:
    """The records in a learned.json's text, without touching the file (for `doctor`); raises
    ValueError saying what is wrong with it."""
    return _parse(text)


def _parse(text: str) -> dict[str, ModelRecord]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise ValueError("not a record of models")
    version = data.get("version")
    if version not in READS:  # a newer file is not guessed at
        raise ValueError(f"version {version!r}, this sparkctl reads versions {', '.join(map(str, READS))}")
    return {str(m): ModelRecord.from_json(r) for m, r in data["models"].items()}

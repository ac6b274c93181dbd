"""What the daemon learns and keeps (core/learned.py): a versioned file written whole, read back
after a restart, and a broken or foreign one set aside with a warning, never fatal."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from sparkctl.core.learned import FILE, KEPT_LOADS, VERSION, Learned


def test_load_times_are_kept_across_a_restart(tmp_path: Path) -> None:
    learned = Learned.load(tmp_path)
    assert learned.typical_load("m") is None  # nothing before the first start
    for seconds in (40.0, 42.0, 90.0):
        learned.loaded("m", seconds)
    learned.record("m").failures += 1
    learned.record("m").memory_bytes = 70 * 2**30
    learned.save(learned.text())
    again = Learned.load(tmp_path)
    assert again.typical_load("m") == 42.0  # the median: one slow start does not skew it
    assert again.records["m"].failures == 1 and again.records["m"].memory_bytes == 70 * 2**30
    assert json.loads((tmp_path / FILE).read_text())["version"] == VERSION
    assert (tmp_path / FILE).stat().st_mode & 0o777 == 0o640


def test_only_the_recent_loads_are_kept(tmp_path: Path) -> None:
    learned = Learned.load(tmp_path)
    for seconds in range(30):
        learned.loaded("m", float(seconds))
    assert learned.records["m"].loads == [float(s) for s in range(30 - KEPT_LOADS, 30)]


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps({"version": VERSION + 1, "models": {}}),  # a newer sparkctl's
        json.dumps({"version": VERSION, "models": {"m": {"loads": ["fast"]}}}),
        json.dumps([1, 2]),
        "",
        '{"version": 2, "models": {"m": {"loads": [Infinity]}}}',  # json reads it; eta=infs would follow
        json.dumps({"version": 2, "models": {"m": {"loads": [30.0], "failures": True}}}),
        json.dumps({"version": 2, "models": {"m": {"stops": [1e9]}}}),
    ],
    ids=["garbled", "newer", "bad-loads", "not-an-object", "empty", "infinite", "boolean", "absurd"],
)
def test_a_file_it_cannot_read_is_set_aside_not_fatal(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / FILE).write_text(text)
    with caplog.at_level(logging.WARNING):
        learned = Learned.load(tmp_path)
    assert learned.records == {} and learned.path == tmp_path / FILE  # learning starts afresh
    aside = list(tmp_path.glob(f"{FILE}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == text  # kept, for a look
    assert "set aside" in caplog.text
    learned.loaded("m", 5.0)
    learned.save(learned.text())
    assert Learned.load(tmp_path).typical_load("m") == 5.0


def test_a_directory_it_cannot_write_keeps_learning_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if os.geteuid() == 0:
        target = tmp_path / "not-a-dir"
        target.write_text("")  # even root cannot make a directory where a file is
        state_dir = target
    else:
        state_dir = tmp_path / "ro"
        state_dir.mkdir(mode=0o500)
    with caplog.at_level(logging.WARNING):
        learned = Learned.load(state_dir)
        learned.loaded("m", 3.0)
        learned.save(learned.text())
        learned.save(learned.text())
    assert learned.typical_load("m") == 3.0
    assert caplog.text.count("in memory") == 1, caplog.text  # said once


def test_a_version_1_file_is_migrated(tmp_path: Path) -> None:
    """An upgrade keeps what was learned: version 1 had loads, failures and memory only."""
    v1 = {"version": 1, "models": {"m": {"loads": [20.0, 22.0], "failures": 2, "memory_bytes": 5 * 2**30}}}
    (tmp_path / FILE).write_text(json.dumps(v1))
    learned = Learned.load(tmp_path)
    record = learned.records["m"]
    assert learned.typical_load("m") == 21.0 and record.failures == 2 and record.memory_bytes == 5 * 2**30
    assert record.exec_loads == [] and record.stops == [] and record.last_used is None
    learned.exec_loaded("m", 18.5)
    learned.stopped("m", 3.0)
    record.last_used = 1_800_000_000.0
    learned.save(learned.text())
    saved = json.loads((tmp_path / FILE).read_text())
    assert saved["version"] == VERSION == 2  # written back as the current version
    again = Learned.load(tmp_path).records["m"]
    assert (again.exec_loads, again.stops, again.last_used) == ([18.5], [3.0], 1_800_000_000.0)
    assert again.typical_stop == 3.0

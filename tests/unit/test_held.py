"""Reservations of this node kept across a daemon restart (#15): runtime.state_dir/reservations.json."""

from __future__ import annotations

from pathlib import Path

from sparkctl.core import held


def test_what_is_saved_is_loaded_and_what_ran_out_is_dropped(tmp_path: Path) -> None:
    kept = [held.Held("big", "spark-a", 1000.0), held.Held("huge", "spark-c", 2000.0)]
    held.save(tmp_path, held.text(kept))
    assert held.load(tmp_path, now=500.0) == kept
    assert held.load(tmp_path, now=1500.0) == [kept[1]]
    assert (tmp_path / held.FILE).stat().st_mode & 0o777 == 0o640


def test_no_file_or_a_bad_one_holds_nothing(tmp_path: Path) -> None:
    assert held.load(tmp_path) == []
    for bad in (
        "{",
        '{"version": 9, "reservations": []}',
        '{"version": 1, "reservations": [{"model": 1}]}',
        "[]",
    ):
        (tmp_path / held.FILE).write_text(bad)
        assert held.load(tmp_path, now=0.0) == [], bad


def test_an_unwritable_state_dir_is_no_failure(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    held.save(blocked, held.text([held.Held("big", "spark-a", 1.0)]))  # logged, not raised
    assert held.load(blocked) == []

"""The dashboard's feeds, their pure parts: rates from the metrics' running totals over a sliding
window (gateway/ui/live.py), and journal entries as the log tail shows them (gateway/ui/logs.py)."""

from __future__ import annotations

import pytest

from sparkctl.gateway.ui.live import Rates
from sparkctl.gateway.ui.logs import MAX_MESSAGE, journal_argv, line_event


def test_rates_are_per_second_over_the_window_per_model() -> None:
    rates = Rates(window=10.0)
    assert rates.per_second("a") == (0.0, 0.0)  # one sample tells nothing
    answered: dict[str, int] = {}
    generated: dict[str, int] = {}
    for t in range(31):  # a request a second with 40 tokens, for 30 s
        answered["a"] = t
        generated["a"] = 40 * t
        rates.sample(float(t), answered, generated)
    assert rates.per_second("a") == pytest.approx((1.0, 40.0))
    assert rates.per_second("b") == (0.0, 0.0)
    for t in range(31, 45):  # then nothing: the window forgets the busy part
        rates.sample(float(t), answered, generated)
    assert rates.per_second("a") == (0.0, 0.0)


def test_several_pages_sample_once_per_tick() -> None:
    rates = Rates()
    rates.sample(0.0, {"a": 0}, {})
    rates.sample(0.1, {"a": 100}, {})  # a second page, at once: not a sample of its own
    rates.sample(1.0, {"a": 1}, {})
    assert rates.per_second("a") == pytest.approx((1.0, 0.0))


def test_a_journal_entry_becomes_a_line() -> None:
    engine = {"MESSAGE": "ready", "__REALTIME_TIMESTAMP": "1700000000000000", "PRIORITY": "6", "_PID": "42"}
    assert line_event(engine) == {
        "time": 1700000000000000,
        "priority": 6,
        "source": "engine",
        "message": "ready",
    }
    systemd = {"MESSAGE": "Started x.", "_PID": "1"}
    assert line_event(systemd) == {"time": 0, "priority": 6, "source": "systemd", "message": "Started x."}
    # journald gives a message that is not UTF-8 as its bytes
    raw = {"MESSAGE": [104, 105, 0xFF]}
    line = line_event(raw)
    assert line is not None and line["message"] == "hi\ufffd"
    assert line_event({"PRIORITY": "3"}) is None
    assert line_event({"MESSAGE": "x", "PRIORITY": "high"}) == {
        "time": 0,
        "priority": 6,
        "source": "engine",
        "message": "x",
    }
    long = line_event({"MESSAGE": "y" * (MAX_MESSAGE + 10)})
    assert long is not None and len(long["message"]) == MAX_MESSAGE


def test_the_tail_follows_the_unit_in_the_right_manager() -> None:
    system = journal_argv("sparkctl-a.service", user=False)
    assert system[:1] == ["journalctl"] and "--user" not in system
    assert system[-2:] == ["-u", "sparkctl-a.service"] and "-f" in system and "json" in system
    assert journal_argv("sparkctl-a.service", user=True)[1] == "--user"

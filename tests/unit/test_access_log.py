"""The console access log (gateway/context.py): one line per request, the lines of one turn of
the event loop in one write (#18: a write per line was a syscall per request)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from sparkctl.gateway.context import ConsoleAccessLog


class _Stderr:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


def _log(monkeypatch: pytest.MonkeyPatch) -> tuple[ConsoleAccessLog, _Stderr]:
    err = _Stderr()
    monkeypatch.setattr(sys, "stderr", err)
    log = ConsoleAccessLog()
    log.enabled = True
    return log, err


async def test_the_lines_of_one_loop_turn_go_out_in_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    log, err = _log(monkeypatch)
    log.request("POST", "/v1/chat/completions", "m", 200, 0.0012, "id-a")
    log.request("POST", "/v1/embeddings", "m", 404, 0.5, "id-b")
    assert err.writes == []  # not yet: at the end of this turn
    await asyncio.sleep(0)
    assert len(err.writes) == 1
    lines = err.writes[0].splitlines()
    assert lines[0].endswith("INFO    POST /v1/chat/completions m 200 0.001s id-a")
    assert lines[1].endswith("INFO    POST /v1/embeddings m 404 0.500s id-b")
    log.request("POST", "/v1/completions", "m", 200, 0.0, "id-c")
    await asyncio.sleep(0)
    assert len(err.writes) == 2 and err.writes[1].count("\n") == 1


def test_without_a_loop_a_line_goes_out_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    log, err = _log(monkeypatch)
    log.request("GET", "/v1/models", "-", 200, 0.0, "id")
    assert len(err.writes) == 1 and err.writes[0].endswith(" GET /v1/models - 200 0.000s id\n")


def test_disabled_it_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    log, err = _log(monkeypatch)
    log.enabled = False
    log.request("GET", "/v1/models", "-", 200, 0.0, "id")
    assert err.writes == []

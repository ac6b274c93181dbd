"""The emulator's multi-node start (BRIEF §9): the head listens for clients only once every
worker has joined, a worker waits for a head that is not there yet, a worker that loses its head
(killed, or silent: a pulled cable sends no FIN) exits non-zero, and so does a head that loses a
worker. Real processes on loopback, ports of this session's range (29260-29269)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sparkctl.emulator.config import parse_args

REPO = Path(__file__).resolve().parents[2]
HTTP = 29260
MASTER = 29261
Spawn = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    started: list[subprocess.Popen[str]] = []

    def _spawn(rank: int, *args: str, nnodes: int = 2, port: int = HTTP) -> subprocess.Popen[str]:
        cmd = [
            sys.executable, "-m", "sparkctl.emulator", "serve", "m", "--port", str(port),
            "--nnodes", str(nnodes), "--node-rank", str(rank), "--master-addr", "127.0.0.1",
            "--master-port", str(MASTER), "--heartbeat-timeout", "2", "--exit-code", "7", *args,
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        return proc

    try:
        yield _spawn
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=5)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _until(condition: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_parse_args_takes_vllms_multinode_flags() -> None:
    cfg = parse_args(["serve", "m", "--nnodes", "2", "--node-rank", "1", "--master-addr", "10.77.0.1",
                      "--master-port", "29262", "--headless"])  # fmt: skip
    assert (cfg.nnodes, cfg.node_rank, cfg.master_addr, cfg.master_port) == (2, 1, "10.77.0.1", 29262)
    with pytest.raises(SystemExit):
        parse_args(["m", "--nnodes", "2", "--node-rank", "2"])


def test_the_head_listens_only_once_every_worker_joined(spawn: Spawn) -> None:
    head = spawn(0, nnodes=3)
    _until(lambda: _listening(MASTER), 10)  # loaded: waiting for its workers
    first = spawn(1, "--headless", nnodes=3)
    # One of two workers, for longer than a heartbeat timeout: no clients yet, and the first
    # worker, hearing its head's heartbeats meanwhile, does not take it for lost.
    time.sleep(3.0)
    assert not _listening(HTTP) and head.poll() is None and first.poll() is None
    spawn(2, "--headless", nnodes=3)
    _until(lambda: _listening(HTTP), 10)
    time.sleep(1.5)
    assert head.poll() is None and first.poll() is None and _listening(HTTP)


def test_a_worker_waits_for_its_head_and_exits_non_zero_when_it_is_killed(spawn: Spawn) -> None:
    worker = spawn(1, "--headless")
    time.sleep(0.8)
    assert worker.poll() is None  # no head yet: it keeps trying
    head = spawn(0)
    _until(lambda: _listening(HTTP), 10)
    head.kill()
    head.wait(timeout=5)
    assert worker.wait(timeout=5) == 7
    out, _ = worker.communicate(timeout=5)
    assert "multinode: lost the head" in out


def test_a_silent_head_is_lost_too(spawn: Spawn) -> None:
    head = spawn(0)
    worker = spawn(1, "--headless")
    _until(lambda: _listening(HTTP), 10)
    os.kill(head.pid, signal.SIGSTOP)  # alive, connection open, silent: as a pulled cable looks
    try:
        t0 = time.monotonic()
        assert worker.wait(timeout=8) == 7
        assert time.monotonic() - t0 < 5  # --heartbeat-timeout 2
    finally:
        os.kill(head.pid, signal.SIGCONT)


def test_a_head_that_loses_a_worker_exits_non_zero_and_sigterm_is_a_clean_stop(spawn: Spawn) -> None:
    head = spawn(0)
    worker = spawn(1, "--headless")
    _until(lambda: _listening(HTTP), 10)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=5) == 0  # stopped, not failed
    assert head.wait(timeout=5) == 7
    out, _ = head.communicate(timeout=5)
    assert "multinode: all 2 nodes joined" in out and "multinode: lost worker rank=1" in out


def test_a_worker_of_another_model_size_is_refused(spawn: Spawn) -> None:
    spawn(0)
    _until(lambda: _listening(MASTER), 10)
    stray = spawn(1, nnodes=3, port=HTTP + 2)
    assert stray.wait(timeout=5) == 7
    out, _ = stray.communicate(timeout=5)
    assert "refused nnodes=3 but the head has 2" in out

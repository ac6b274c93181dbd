"""`sparkctl demo` as README tells a newcomer to run it: the real stack in a sandbox, a first chat
completion through the openai client, root's admin commands reaching the running demo without a
flag (`ps`, `models list`, `logs`, `keys list`, `doctor`), and nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
import pytest

from sparkctl.sandbox.box import ROOT, Box
from sparkctl.settings import DEFAULT_CONFIG
from sparkctl.tools.demo_locator import LOCATOR, Demo
from tests.integration import agents

SPARKCTL = str(Path(sys.executable).parent / "sparkctl")
DEMO_MODELS = ["demo-chat", "demo-coder", "demo-large"]
# What would point the CLI elsewhere: the demo must be found without any of it.
OVERRIDES = ("SPARKCTL_CONFIG", "SPARKCTL_URL", "SPARKCTL_API_KEY", "SPARKCTL_IN_DEMO")


def test_demo_once_serves_a_chat_completion_and_cleans_up(box: Box) -> None:
    proc = subprocess.run(
        [SPARKCTL, "demo", "--once", "--port", "28960"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "demo-chat answered after a cold start" in proc.stderr
    assert "models: demo-chat, demo-coder, demo-large" in proc.stderr
    assert "its dashboard (sign in with that key) at\n  http://127.0.0.1:28960/ui/\n" in proc.stderr
    assert not (ROOT / "demo").exists()
    assert not LOCATOR.exists()


def test_demo_with_two_nodes_serves_a_model_spanning_both_once(box: Box) -> None:
    """`sparkctl demo --nodes 2 --once` (#15): two sandboxed Sparks, linked, each with its own
    daemon; the first request is for the model that spans both, and is served."""
    proc = subprocess.run(
        [SPARKCTL, "demo", "--nodes", "2", "--once", "--port", "28962"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "models: demo-a (spark-a), demo-span (spark-a), demo-b (spark-b)" in proc.stderr
    assert "demo-span (spanning 2 nodes) answered after a cold start" in proc.stderr
    assert not (ROOT / "demo-node0").exists() and not (ROOT / "demo-node1").exists()
    assert not LOCATOR.exists()


def test_a_cluster_demo_is_reached_by_root_s_commands(box: Box) -> None:
    proc = subprocess.Popen(
        [SPARKCTL, "demo", "--nodes", "2", "--port", "28962"], stderr=subprocess.PIPE, text=True
    )
    key = None
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.strip().startswith("sk-spark-"):
                key = line.strip()
            if "Ctrl-C stops the demo" in line:
                break
        assert key is not None
        _cluster_page("http://127.0.0.1:28962", key)
        ps = admin("ps", "-a")
        assert ps.returncode == 0, ps.stderr
        rows = {tuple(line.split()[:3]) for line in ps.stdout.splitlines()[1:]}
        # spark-a's view: its own models, spark-b's, and the spanning one once (its owner's)
        assert {r[:2] for r in rows} == {
            ("demo-a", "spark-a"),
            ("demo-span", "spark-a"),
            ("demo-b", "spark-b"),
        }
        assert ("demo-span", "spark-a", "ready") in rows
        doctor = admin("doctor", "--json")
        checks = {c["check"]: c for c in json.loads(doctor.stdout)}
        assert checks["cluster link"]["status"] != "fail", checks["cluster link"]  # its own end of the link
        assert checks["cluster peers"]["status"] == "pass", checks["cluster peers"]
        assert checks["spanning models"]["status"] == "pass", checks["spanning models"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    assert proc.returncode == 0
    assert not (ROOT / "demo-node0").exists() and not LOCATOR.exists()


def admin(*argv: str) -> subprocess.CompletedProcess[str]:
    """Root's `sparkctl ARGV` as typed at a shell next to the demo: no flags, no SPARKCTL_* set."""
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    return subprocess.run(
        [SPARKCTL, *argv], capture_output=True, text=True, timeout=60, check=False, env=env, cwd="/"
    )


def test_demo_serves_until_interrupted(box: Box) -> None:
    assert not DEFAULT_CONFIG.exists(), f"{DEFAULT_CONFIG} (an installed sparkctl) would win over the demo"
    proc = subprocess.Popen([SPARKCTL, "demo", "--port", "28961"], stderr=subprocess.PIPE, text=True)
    key = None
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if line.strip().startswith("sk-spark-"):
                key = line.strip()
            if "Ctrl-C stops the demo" in line:
                break
        assert key is not None
        client = openai.OpenAI(base_url="http://127.0.0.1:28961/v1", api_key=key, max_retries=0)
        # the exclusive model: a swap out of demo-chat, through the real stack
        reply = client.chat.completions.create(
            model="demo-large", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 3

        # Where the demo is: a record for root alone, naming this demo.
        st = LOCATOR.stat()
        assert st.st_uid == 0 and st.st_mode & 0o777 == 0o600
        demo = Demo.from_json(LOCATOR.read_text())
        assert demo.pid == proc.pid and demo.url == "http://127.0.0.1:28961"
        reached = "(the running demo at http://127.0.0.1:28961)"

        ps = admin("ps", "-a", "--json")
        assert ps.returncode == 0, ps.stderr
        assert ps.stderr.count(reached) == 1, ps.stderr
        states = {m["id"]: m["state"] for m in json.loads(ps.stdout)}
        assert sorted(states) == DEMO_MODELS and states["demo-large"] == "ready", states

        listed = admin("models", "list", "--json")
        assert listed.returncode == 0 and reached in listed.stderr, listed.stderr
        rows = {r["id"]: r for r in json.loads(listed.stdout)}
        assert sorted(rows) == DEMO_MODELS  # the demo's catalog, not this host's
        assert rows["demo-large"]["state"] == "ready" and rows["demo-chat"]["state"] == "stopped", rows
        assert rows["demo-chat"]["runtime"] == "process" and rows["demo-large"]["gpu"] == "exclusive"

        shown = admin("models", "show", "demo-coder", "--json")
        assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == "demo-coder", shown.stderr

        # the demo's journal: demo-large's emulator said it was ready
        logs = admin("logs", "demo-large", "-n", "50")
        assert logs.returncode == 0 and "ready exec_to_ready_ms=" in logs.stdout, logs.stdout + logs.stderr

        keys = admin("keys", "list", "--json")
        assert keys.returncode == 0 and any(k["scope"] == "admin" for k in json.loads(keys.stdout)), keys

        doctor = admin("doctor", "--json")
        checks = {c["check"]: c for c in json.loads(doctor.stdout)}
        assert checks["demo"]["status"] == "pass", checks
        port = checks["gateway port"]
        assert port["status"] == "pass" and port["detail"] == "127.0.0.1:28961 held by sparkctl.socket", port
        assert "NVIDIA driver" not in checks  # a Spark's check: the demo's engines are emulated
        failed = [c for c in checks.values() if c["status"] == "fail"]
        assert doctor.returncode == 0 and not failed, failed

        # the coding agents a newcomer runs, as docs/integrations.md configures them: each
        # finishes in seconds (a bound, not a benchmark) with the demo's answer
        for run in (agents.opencode, agents.claude, agents.codex, agents.continue_cli):
            home = Path(tempfile.mkdtemp(prefix="sparkctl-agent-"))
            try:
                t0 = time.monotonic()
                done = run("http://127.0.0.1:28961", key, "demo-chat", home, "Say hello")
                took = time.monotonic() - t0
            finally:
                shutil.rmtree(home, ignore_errors=True)
            assert done.returncode == 0 and "lorem" in done.output, (done.agent, done.output[-2000:])
            assert took < 60, (done.agent, took)

        # a second demo would tear this one's sandbox down: it is refused
        second = admin("demo", "--port", "28963")
        assert second.returncode == 1, second.stderr
        assert "error: a demo already runs at http://127.0.0.1:28961" in second.stderr
        assert admin("ps").returncode == 0
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        if proc.stderr is not None:
            proc.stderr.close()
    assert not (ROOT / "demo").exists()
    assert not LOCATOR.exists()
    after = admin("models", "list", "--json")  # this host again: its own catalog, no demo named
    assert after.returncode == 0 and "demo" not in after.stderr
    assert not {r["id"] for r in json.loads(after.stdout)} & set(DEMO_MODELS)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a script's background job starts with


@pytest.mark.parametrize(
    ("stop", "started_ignoring_sigint"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigterm", "sigint-in-a-background-job"],
)
def test_a_signal_ends_the_demo_like_ctrl_c(
    box: Box, stop: signal.Signals, started_ignoring_sigint: bool
) -> None:
    proc = subprocess.Popen(
        [SPARKCTL, "demo", "--port", "28962"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint if started_ignoring_sigint else None,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "Ctrl-C stops the demo" not in proc.stderr.readline():
            pass
        assert LOCATOR.exists()
    finally:
        proc.send_signal(stop)
        assert proc.wait(timeout=60) == 0
        if proc.stderr is not None:
            proc.stderr.close()
    assert not (ROOT / "demo").exists()
    assert not LOCATOR.exists()


def _cluster_page(url: str, key: str) -> None:
    """spark-a's dashboard in a real headless chromium: every node's models, each node, no error."""
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/ui/")
            page.locator("#login-key").fill(key)
            page.keyboard.press("Enter")
            rows = page.locator("#models tbody tr[data-model]")
            expect(rows).to_have_count(3, timeout=20_000)
            expect(page.locator('tr[data-model="demo-b"]')).to_contain_text("on spark-b")
            expect(page.locator('tr[data-model="demo-span"] .state')).to_have_text("ready")
            expect(page.locator('tr[data-model="demo-a"] button.start')).to_be_visible()  # this node's
            expect(page.locator("#nodes .node")).to_have_count(2)
            expect(page.locator('#nodes [data-node="spark-b"]')).to_contain_text("answers")
            assert not errors, errors
        finally:
            browser.close()

"""`sparkctl demo` as README tells a newcomer to run it: the real stack in a sandbox, a first chat
completion through the openai client, and nothing left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import openai

from sparkctl.sandbox.box import ROOT, Box

SPARKCTL = str(Path(sys.executable).parent / "sparkctl")


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
    assert not (ROOT / "demo").exists()


def test_demo_serves_until_interrupted(box: Box) -> None:
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
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        if proc.stderr is not None:
            proc.stderr.close()
    assert not (ROOT / "demo").exists()

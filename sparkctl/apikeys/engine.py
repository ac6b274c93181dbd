"""The engine key (#13 finding 3): one secret per install that every model's engine requires and
only the daemon holds, so a loaded model answers nobody who goes around the gateway.

It lives in an environment file, `runtime.engine_env` (`/etc/sparkctl/engine.env`, mode 0640,
root:sparkctl like the API key file): systemd reads it into each model unit's environment
(EnvironmentFile=), vLLM takes its key from `VLLM_API_KEY` (and the emulator, as vLLM does), and a
container gets the variable passed through (`--env VLLM_API_KEY`); the key is on no command line,
where every local user could read it. The daemon reads it through its group and sends the key
upstream as `Authorization: Bearer`. SGLang takes a key only on its command line: its engines
stay without one.
"""

from __future__ import annotations

import secrets
from pathlib import Path

ENV_VAR = "VLLM_API_KEY"
KEY_PREFIX = "sk-engine-"


def engine_env_text() -> str:
    """A new engine environment file, with a new key (256 random bits)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return (
        "# The key sparkctl's model engines require; only the daemon sends it. Written by\n"
        "# `sparkctl install`: replace it with `sudo rm` this file and a new install.\n"
        f"{ENV_VAR}={key}\n"
    )


def read_engine_key(path: Path) -> str | None:
    """The key in an engine environment file; None when there is no file (engines keyless)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() == ENV_VAR and value.strip():
            return value.strip()
    return None

"""The coding agents a Spark owner runs (OpenCode, Claude Code, Codex, Continue), driven headless against a
running sparkctl with the configurations docs/integrations.md gives, the Spark's URL and model ids
put in place of the documented ones. `scripts/setup` installs the agents from npm, pinned."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).parents[2]
AGENTS = Path(os.path.realpath(ROOT / ".venv")) / "clients" / "node_modules" / ".bin"
DOCUMENTED_URL = "http://127.0.0.1:8009"


def documented_block(heading: str, language: str) -> str:
    """The first ```language block under `## heading` in docs/integrations.md."""
    text = (ROOT / "docs" / "integrations.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def agent(name: str) -> str:
    path = AGENTS / name
    if not path.exists():
        if IN_CI:  # CI installs them (scripts/setup): missing there is a failure, not a skip
            pytest.fail(f"{name} is not installed: scripts/setup did not install it", pytrace=False)
        pytest.skip(f"{name} is not installed: run ./scripts/setup (it needs npm)")
    return str(path)


@dataclass
class Run:
    agent: str
    returncode: int
    output: str


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_", "SPARKCTL_"))}
    return subprocess.run(
        argv, env={**base, **env}, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def opencode(url: str, key: str, model: str, home: Path, prompt: str) -> Run:
    config = json.loads(documented_block("OpenCode", "json"))
    provider = config["provider"]["spark"]
    assert provider["options"]["baseURL"] == f"{DOCUMENTED_URL}/v1"
    provider["options"]["baseURL"] = f"{url}/v1"
    provider["models"] = {
        model: {"name": model, "tool_call": True, "limit": {"context": 8192, "output": 2048}}
    }
    config["model"] = config["small_model"] = f"spark/{model}"
    (home / "opencode.json").write_text(json.dumps(config))
    env = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local"),
        "OPENCODE_CONFIG": str(home / "opencode.json"),
        "SPARKCTL_API_KEY": key,
    }
    done = _run([agent("opencode"), "run", prompt], env, home)
    return Run("opencode", done.returncode, done.stdout + done.stderr)


def claude(url: str, key: str, model: str, home: Path, prompt: str) -> Run:
    env = dict(
        re.findall(
            r"^export (\w+)=(.*)$",
            documented_block("Claude Code and other Anthropic SDK clients", "sh"),
            re.M,
        )
    )
    assert (
        env["ANTHROPIC_BASE_URL"] == DOCUMENTED_URL and env["ANTHROPIC_AUTH_TOKEN"] == '"$SPARKCTL_API_KEY"'
    )
    env.update(
        ANTHROPIC_BASE_URL=url,
        ANTHROPIC_AUTH_TOKEN=key,
        ANTHROPIC_MODEL=model,
        ANTHROPIC_DEFAULT_HAIKU_MODEL=model,
        CLAUDE_CODE_MAX_OUTPUT_TOKENS="2048",  # the demo's models hold 8,192 tokens in all
        HOME=str(home),
        # no reach for the internet beyond the Spark (it has none here)
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
    )
    done = _run([agent("claude"), "-p", prompt], env, home)
    return Run("claude", done.returncode, done.stdout + done.stderr)


def codex(url: str, key: str, model: str, home: Path, prompt: str) -> Run:
    text = documented_block("Codex and other Responses API clients", "toml")
    config = tomllib.loads(text)
    assert config["model_providers"]["spark"]["base_url"] == f"{DOCUMENTED_URL}/v1"
    text = text.replace(f"{DOCUMENTED_URL}/v1", f"{url}/v1").replace(f'"{config["model"]}"', f'"{model}"', 1)
    (home / "codex").mkdir(exist_ok=True)
    (home / "codex" / "config.toml").write_text(text)
    env = {"HOME": str(home), "CODEX_HOME": str(home / "codex"), "SPARKCTL_API_KEY": key}
    done = _run([agent("codex"), "exec", "--skip-git-repo-check", prompt], env, home)
    return Run("codex", done.returncode, done.stdout + done.stderr)


def continue_cli(url: str, key: str, model: str, home: Path, prompt: str) -> Run:
    text = documented_block("Continue (VS Code, JetBrains)", "yaml")
    assert f"apiBase: {DOCUMENTED_URL}/v1" in text and "model: gpt-oss-20b" in text
    text = text.replace(f"{DOCUMENTED_URL}/v1", f"{url}/v1").replace("gpt-oss-20b", model)
    text = text.replace("apiKey: sk-spark-...", f"apiKey: {key}")
    (home / "config.yaml").write_text(text)
    done = _run([agent("cn"), "-p", prompt, "--config", str(home / "config.yaml")], {"HOME": str(home)}, home)
    return Run("continue", done.returncode, done.stdout + done.stderr)

"""Stand-in weights for emulated models (the demo, the tests, the benchmarks): their engine,
`sparkctl emulate`, needs none, but every start is checked for weights like a real one's."""

from __future__ import annotations

from pathlib import Path

from sparkctl.core.weights import repo_dir

PLACEHOLDER_COMMIT = "0" * 39 + "1"


def write_placeholder(hf_cache: Path, repo: str, revision: str = "main") -> Path:
    """A snapshot holding one note instead of weights, laid out as huggingface_hub would: for
    emulated models (the demo, the tests), whose engine needs none but whose start is checked."""
    base = repo_dir(hf_cache, repo)
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / revision).write_text(PLACEHOLDER_COMMIT)
    snapshot = base / "snapshots" / PLACEHOLDER_COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "README.sparkctl").write_text("An emulated model: `sparkctl emulate` needs no weights.\n")
    return snapshot

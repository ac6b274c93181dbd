"""Make vLLM's Qwen3-Next MoE router gate use the checkpoint's quantisation config.

Some vLLM versions build the gate of Qwen3NextSparseMoeBlock as
`ReplicatedLinear(hidden_size, num_experts, bias=False, quant_config=None, prefix=f"{prefix}.gate")`.
Intel's AutoRound checkpoint quantises that gate too, so its weights do not load into an
unquantised layer. Later vLLM passes `quant_config=quant_config`; this edits the installed file to
that form when it finds the old one. Already fixed: nothing to do. Neither form found (vLLM moved
the code): a warning, and the model starts as the installed vLLM has it.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

GATE = re.compile(
    r"(self\.gate\s*=\s*ReplicatedLinear\(\s*config\.hidden_size,\s*config\.num_experts,\s*bias=False,\s*"
    r"quant_config=)(None|quant_config)(,\s*prefix=f\"\{prefix\}\.gate\",?\s*\))"
)


def fix(text: str) -> tuple[str, str]:
    """(new text, what happened: "fixed" | "already" | "unknown")."""
    match = GATE.search(text)
    if match is None:
        return text, "unknown"
    if match.group(2) == "quant_config":
        return text, "already"
    return text[: match.start(2)] + "quant_config" + text[match.end(2) :], "fixed"


def main() -> int:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        print("fix-qwen3-next-autoround: vLLM is not installed", file=sys.stderr)
        return 1
    path = Path(next(iter(spec.submodule_search_locations))) / "model_executor/models/qwen3_next.py"
    text = path.read_text()
    new, outcome = fix(text)
    if outcome == "fixed":
        path.write_text(new)
        print(
            "fix-qwen3-next-autoround: the MoE gate now uses the checkpoint's quantisation", file=sys.stderr
        )
    elif outcome == "already":
        print("fix-qwen3-next-autoround: this vLLM already quantises the MoE gate", file=sys.stderr)
    else:
        print(
            f"fix-qwen3-next-autoround: warning: no MoE gate construction found in {path}; left as is",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

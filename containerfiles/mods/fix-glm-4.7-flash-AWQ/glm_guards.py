"""Guards GLM-4.7-Flash-AWQ needs in the installed vLLM (run at image build time).

* MLA attention reads `self.kv_b_proj.weight.dtype`; with this AWQ checkpoint kv_b_proj is a
  quantised layer that has no `weight` (it has qweight/scales), so the attribute access fails.
  The dtype then falls back to bfloat16, the checkpoint's activation dtype.
* `vllm._custom_ops.cutlass_scaled_mm_supports_{fp4,fp8,block_fp8}` call ops that a 12.1a build
  may not contain; a missing op means "not supported" (False), not a crash.
Idempotent; fails when a target is not found, so a vLLM that moved the code is noticed at build.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

FALLBACK = '(self.kv_b_proj.weight.dtype if hasattr(self.kv_b_proj, "weight") else torch.bfloat16)'
PROBES = (
    "cutlass_scaled_mm_supports_fp4",
    "cutlass_scaled_mm_supports_fp8",
    "cutlass_scaled_mm_supports_block_fp8",
)


def guard_dtype(text: str) -> str | None:
    if FALLBACK in text:
        return text
    if "self.kv_b_proj.weight.dtype" not in text:
        return None
    return text.replace("self.kv_b_proj.weight.dtype", FALLBACK)


def guard_probes(text: str) -> tuple[str, list[str]]:
    missing = []
    for name in PROBES:
        body = re.compile(
            rf"(def {name}\([^)]*\)[^:]*:\n)(?P<indent>[ \t]+)return (torch\.ops\._C\.{name}\([^)]*\))\n"
        )
        if re.search(rf"def {name}\([^)]*\)[^:]*:\n[ \t]+try:", text):
            continue
        match = body.search(text)
        if match is None:
            missing.append(name)
            continue
        i = match["indent"]
        new = (
            f"{match.group(1)}{i}try:\n{i}    return {match.group(3)}\n"
            f"{i}except AttributeError:\n{i}    return False\n"
        )
        text = text[: match.start()] + new + text[match.end() :]
    return text, missing


def main() -> int:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("glm_guards: vLLM is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    errors = []
    mla = next(
        (
            p
            for p in (
                root / "model_executor/layers/attention/mla_attention.py",
                root / "attention/layers/mla_attention.py",
            )
            if p.is_file()
        ),
        None,
    )
    if mla is None:
        errors.append("no mla_attention.py in this vLLM")
    else:
        new = guard_dtype(mla.read_text())
        if new is None:
            errors.append(f"{mla}: no kv_b_proj.weight.dtype to guard")
        else:
            mla.write_text(new)
    ops = root / "_custom_ops.py"
    new_ops, missing = guard_probes(ops.read_text())
    ops.write_text(new_ops)
    errors += [f"{ops}: no {name}() to guard" for name in missing]
    for e in errors:
        print(f"glm_guards: error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

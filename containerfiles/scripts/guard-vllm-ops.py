#!/usr/bin/env python3
"""guard-vllm-ops.py [--check]

vLLM built for the GB10 (sm_121, `12.1a`) lacks some of its CUTLASS kernels and the grouped FP8
quantisation op: they are compiled only for other architectures, so `torch.ops._C.<op>` does not
exist. Several probes call them unconditionally and vLLM dies at import or at model load with an
AttributeError instead of taking its non-CUTLASS path. This script adds a "does the op exist?"
guard in front of each such call in the installed vLLM:

  quantization/utils/w8a8_utils.py     cutlass_scaled_mm_supports_fp8, cutlass_scaled_mm_supports_block_fp8,
                                       cutlass_group_gemm_supported  → False when the op is absent
  compilation/.../matcher_utils.py,
  compilation/.../rms_quant_fusion.py  per_token_group_fp8_quant registration → only when present
  quantization/utils/fp8_utils.py      the per_token_group_fp8_quant fast path → only when present
  quantization/utils/int8_utils.py     the per_token_group_quant_int8 CUDA path → only when present
                                       (else vLLM's Triton kernel below it runs)

It is idempotent (a guarded call is left alone) and loud: a call it expects but cannot find
fails the build, because a vLLM that moved the code would otherwise ship without the guard and
crash on the Spark. `--check` only reports.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

PROBES = (
    "cutlass_scaled_mm_supports_fp8",
    "cutlass_scaled_mm_supports_block_fp8",
    "cutlass_group_gemm_supported",
)
GROUP_OP = "per_token_group_fp8_quant"
INT8_OP = "per_token_group_quant_int8"


def vllm_dir() -> Path:
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("guard-vllm-ops: vLLM is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def guard_probes(text: str) -> tuple[str, list[str]]:
    """`return ops.NAME(x)` → `if not hasattr(torch.ops._C, "NAME"): return False` + the call."""
    problems = []
    for name in PROBES:
        guarded = re.compile(rf'hasattr\(torch\.ops\._C, ["\']{name}["\']\)')
        if guarded.search(text):
            continue
        call = re.compile(rf"^(?P<indent>[ \t]+)return ops\.{name}\((?P<args>[^)]*)\)[ \t]*$", re.M)
        match = call.search(text)
        if match is None:
            problems.append(f"w8a8_utils.py: no `return ops.{name}(…)` to guard")
            continue
        indent = match["indent"]
        replacement = (
            f'{indent}if not hasattr(torch.ops._C, "{name}"):\n{indent}    return False\n{match.group(0)}'
        )
        text = text[: match.start()] + replacement + text[match.end() :]
    return text, problems


def guard_registration(text: str, filename: str) -> tuple[str, list[str]]:
    """`if current_platform.is_cuda():` that registers the grouped FP8 op → only if the op exists."""
    if re.search(rf'is_cuda\(\) and hasattr\(torch\.ops\._C, ["\']{GROUP_OP}["\']\)', text):
        return text, []
    registration = rf"\n[ \t]+QUANT_OPS\[[^\]]+\] = torch\.ops\._C\.{GROUP_OP}"
    pattern = re.compile(rf"^(?P<head>[ \t]*if current_platform\.is_cuda\(\)):(?={registration})", re.M)
    new, count = pattern.subn(rf'\g<head> and hasattr(torch.ops._C, "{GROUP_OP}"):', text, count=1)
    return new, ([] if count else [f"{filename}: no CUDA registration of {GROUP_OP} to guard"])


def guard_fast_path(text: str) -> tuple[str, list[str]]:
    if re.search(rf'x\.is_contiguous\(\) and hasattr\(torch\.ops\._C, ["\']{GROUP_OP}["\']\)', text):
        return text, []
    old = "if current_platform.is_cuda() and x.is_contiguous():"
    if old not in text:
        return text, [f"fp8_utils.py: no `{old}` to guard"]
    return text.replace(
        old,
        f'if current_platform.is_cuda() and x.is_contiguous() and hasattr(torch.ops._C, "{GROUP_OP}"):',
        1,
    ), []


def guard_int8(text: str) -> tuple[str, list[str]]:
    """`if current_platform.is_cuda():` in front of the INT8 op's call → only if the op exists.
    A vLLM that does not call the op directly needs nothing."""
    if f"torch.ops._C.{INT8_OP}(" not in text:
        return text, []
    if re.search(rf'is_cuda\(\) and hasattr\(torch\.ops\._C, ["\']{INT8_OP}["\']\)', text):
        return text, []
    pattern = re.compile(
        rf"^(?P<head>[ \t]*if current_platform\.is_cuda\(\)):(?=\n[ \t]+torch\.ops\._C\.{INT8_OP}\()", re.M
    )
    new, count = pattern.subn(rf'\g<head> and hasattr(torch.ops._C, "{INT8_OP}"):', text, count=1)
    return new, (
        [] if count else [f"int8_utils.py: no `if current_platform.is_cuda():` before {INT8_OP} to guard"]
    )


def find(root: Path, *candidates: str) -> Path | None:
    return next((root / c for c in candidates if (root / c).is_file()), None)


def main() -> int:
    check_only = "--check" in sys.argv[1:]
    root = vllm_dir()
    jobs = [
        (("model_executor/layers/quantization/utils/w8a8_utils.py",), guard_probes),
        (
            ("compilation/passes/fusion/matcher_utils.py", "compilation/matcher_utils.py"),
            lambda t: guard_registration(t, "matcher_utils.py"),
        ),
        (
            ("compilation/passes/fusion/rms_quant_fusion.py", "compilation/fusion.py"),
            lambda t: guard_registration(t, "rms_quant_fusion.py"),
        ),
        (("model_executor/layers/quantization/utils/fp8_utils.py",), guard_fast_path),
        (("model_executor/layers/quantization/utils/int8_utils.py",), guard_int8),
    ]
    problems: list[str] = []
    for candidates, edit in jobs:
        path = find(root, *candidates)
        if path is None:
            problems.append(f"none of {', '.join(candidates)} exists under {root}")
            continue
        text = path.read_text()
        new, found = edit(text)
        problems += found
        if new != text and not check_only:
            path.write_text(new)
            print(f"guard-vllm-ops: guarded {path.relative_to(root)}")
        elif new != text:
            print(f"guard-vllm-ops: {path.relative_to(root)} needs guards")
    for p in problems:
        print(f"guard-vllm-ops: error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""vLLM's fused-MoE Triton kernels: stride arguments without the `tl.int64` annotation.

For the Qwen3-Next and Qwen3.5/3.6 MoE lanes, applied at container start by
mods/fix-qwen3-coder-next/run.sh. An upstream change annotated the stride parameters of
fused_moe_kernel and fused_moe_kernel_gptq_awq as tl.int64; Triton then no longer specialises
them (a stride of 1 stops being a compile-time constant) and these models decode markedly
slower on the GB10. This undoes that annotation in those two kernels only; vLLM versions
without it need nothing ("in effect"). The annotation was short-lived on vLLM's main branch: no
release from 0.16 to 0.20 has it, so on most images this only confirms it is absent. The
reference stack reverted the upstream diff at start, for the same lanes.
"""

from __future__ import annotations

import re

from srcfix import Edit

FUSED_MOE = "vllm/model_executor/layers/fused_moe/fused_moe.py"
# The header of a kernel definition: from `def NAME(` to the `):` line that ends it.
TYPED_STRIDE = r"^([ \t]+stride_\w+): tl\.int64,"
HEADER = r"^def {name}\(\n(?:(?!\)(?: -> [^\n]*)?:\n).*\n)*?\)(?: -> [^\n]*)?:\n"


def _edit(name: str) -> Edit:
    header = HEADER.format(name=name)
    return Edit(
        what=f"{name} takes untyped strides",
        paths=(FUSED_MOE,),
        pattern=header,
        replacement=lambda m: re.sub(TYPED_STRIDE, r"\1,", m.group(0), flags=re.MULTILINE),
        done=lambda text: _untyped(text, header),
    )


def _untyped(text: str, header: str) -> bool:
    match = re.search(header, text, re.MULTILINE)
    return match is not None and re.search(TYPED_STRIDE, match.group(0), re.MULTILINE) is None


EDITS = [_edit("fused_moe_kernel_gptq_awq"), _edit("fused_moe_kernel")]

"""vLLM's Triton MLA decode: size the KV split count by sequence length (GLM-4.7-Flash speed).

For localhost/sparkctl-vllm-glm-4.7-flash-awq, applied at build time by
mods/fix-glm-4.7-flash-AWQ/apply.sh. The Triton MLA backend splits each decode's KV scan into a
constant 4 parts, which leaves most of the GB10 idle at the long contexts GLM-4.7-Flash serves.
The reference stack's speed patch used max(32, min(128, max_seq_len // 1500)) splits; the
split count is a compile-time constant of the Triton kernel, so every distinct value costs a
kernel compile mid-request. Here the same range is rounded down to a power of two: 32, 64 or
128 splits, three kernels. Batch-invariant mode keeps its single split. vLLM versions that
already size the splits by sequence length themselves need nothing ("in effect").
"""

from __future__ import annotations

from srcfix import Edit

EDITS = [
    Edit(
        what="the MLA decode splits the KV scan by sequence length",
        paths=("vllm/v1/attention/backends/mla/triton_mla.py",),
        pattern=r"^(?P<indent>[ \t]*)num_kv_splits = 1 if (?P<cond>[^\n]+?) else 4[ \t]*$",
        replacement=(
            r"\g<indent># sparkctl: 32, 64 or 128 splits by length (fixes/vllm-triton-mla-splits.py)"
            "\n"
            r"\g<indent>num_kv_splits = 1 if \g<cond> else 1 << ("
            r"max(32, min(128, attn_metadata.max_seq_len // 1500)).bit_length() - 1)"
        ),
        # ours, or upstream's own sequence-length heuristic
        done=(
            r"^[ \t]*num_kv_splits = 1 if .+ else 1 << \(max\(32, min\(128, "
            r"|^[ \t]*ideal_splits = .*max_seq_len"
        ),
    ),
]

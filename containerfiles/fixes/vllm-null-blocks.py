"""vLLM's KV-cache manager: skip null blocks when caching a request's blocks.

For the Qwen3-Next and Qwen3.5/3.6 hybrid (attention + Mamba) lanes, applied at container start
by mods/fix-qwen3-coder-next/run.sh to the installed vLLM. With prefix caching on, the
Mamba manager's cache_blocks walks blocks that include the null block (it has no hash), and the
`assert block.block_hash is not None` kills the engine mid-request. Later vLLM skips them itself,
and vLLM before 0.17 has no such loop: either way no unguarded assert is left ("in effect").
"""

from __future__ import annotations

import re

from srcfix import Edit

ASSERT = re.compile(r"^(?P<before>.*\n.*\n)?[ \t]+assert block\.block_hash is not None$", re.MULTILINE)


def _no_unguarded_assert(text: str) -> bool:
    """Every `assert block.block_hash is not None` comes right after a null-block skip."""
    guard = re.compile(r"[ \t]+if block\.is_null:.*\n[ \t]+continue\n")
    return all(guard.fullmatch(m["before"] or "") for m in ASSERT.finditer(text))


EDITS = [
    Edit(
        what="cache_blocks skips null blocks",
        paths=("vllm/v1/core/single_type_kv_cache_manager.py",),
        pattern=(
            r"(?P<loop>^[ \t]*for block in self\.req_to_blocks\[request\.request_id\]\[\s*"
            r"num_cached_blocks_before:num_cached_blocks_after\s*\]:\n)"
            r"(?P<indent>[ \t]+)(?P<check>assert block\.block_hash is not None\n)"
        ),
        replacement=(
            r"\g<loop>\g<indent>if block.is_null:  # sparkctl\n\g<indent>    continue\n\g<indent>\g<check>"
        ),
        done=_no_unguarded_assert,
    ),
]

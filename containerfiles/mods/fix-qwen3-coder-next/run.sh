#!/bin/bash
# Entrypoint wrapper for Qwen3-Next / Qwen3.5 MoE lanes, then exec "$@". Three runtime fixes:
#   vllm-null-blocks          the KV-cache manager skips null blocks when caching them
#                             (single_type_kv_cache_manager.cache_blocks), or these hybrid models
#                             crash; the TF5 image has it built in, this checks it again
#   vllm-moe-untyped-strides  undoes the tl.int64 stride annotations that made the fused-MoE
#                             kernels slow for these models (only for these lanes, so at start)
#   Triton allocator          Triton kernels that need scratch memory fail with Triton's default
#                             "NullAllocator"; sparkctl_triton_allocator.pth makes it allocate with torch
# The fixes are sparkctl's (/opt/sparkctl/fixes, applied by scripts/srcfix.py); one that no longer
# fits this vLLM, or that cannot run at all, is reported and skipped: the model may then still
# run, and the journal says why it might not.
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
tools="${SPARKCTL_IMAGE_TOOLS:-/opt/sparkctl}"
site="$(python3 -c 'import importlib.util as u, pathlib as p; print(p.Path(list(u.find_spec("vllm").submodule_search_locations)[0]).parent)')"

for fix in vllm-null-blocks vllm-moe-untyped-strides; do
  python3 "$tools/scripts/srcfix.py" --lenient "$tools/fixes/$fix.py" "$site" ||
    echo "fix-qwen3-coder-next: warning: $fix could not run (exit $?); continuing without it" >&2
done
cp "$here/sparkctl_triton_allocator.py" "$here/sparkctl_triton_allocator.pth" "$site/"
exec "$@"

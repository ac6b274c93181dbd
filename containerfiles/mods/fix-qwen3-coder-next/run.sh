#!/bin/bash
# Entrypoint wrapper for Qwen3-Next / Qwen3.5 MoE lanes, then exec "$@". Three runtime fixes:
#   fix_crash.diff     applied: the KV-cache manager must skip null blocks when caching them
#                      (single_type_kv_cache_manager.cache_blocks), or these hybrid models crash
#   fix_slowness.diff  reverted: undoes the upstream change that made them slow
#   Triton allocator   Triton kernels that need scratch memory fail with Triton's default
#                      "NullAllocator"; sparkctl_triton_allocator.pth makes it allocate with torch
# The two diffs are inputs the image builder supplies (containerfiles/README.md); the build
# refuses to finish without them, so they are here. A diff that no longer fits this vLLM is
# reported and skipped: the model may then still run, and the journal says why it might not.
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
site="$(python3 -c 'import importlib.util as u, pathlib as p; print(p.Path(list(u.find_spec("vllm").submodule_search_locations)[0]).parent)')"

apply() {  # apply DIFF [-R]: apply (with -R: revert) it once; say so when it does not fit
  local diff=$1 flags=() undo=(-R) verb=applied
  if [[ ${2:-} == -R ]]; then flags=(-R); undo=(); verb=reverted; fi
  local name
  name="$(basename "$diff")"
  if patch -p1 -N --dry-run --silent "${flags[@]}" -d "$site" < "$diff" >/dev/null 2>&1; then
    patch -p1 -N --silent "${flags[@]}" -d "$site" < "$diff"
    echo "fix-qwen3-coder-next: $verb $name" >&2
  elif patch -p1 --dry-run --silent "${undo[@]}" -d "$site" < "$diff" >/dev/null 2>&1; then
    echo "fix-qwen3-coder-next: $name already in effect" >&2
  else
    echo "fix-qwen3-coder-next: warning: $name does not fit this vLLM; continuing without it" >&2
  fi
}

apply "$here/fix_crash.diff"
apply "$here/fix_slowness.diff" -R
cp "$here/sparkctl_triton_allocator.py" "$here/sparkctl_triton_allocator.pth" "$site/"
exec "$@"

#!/bin/bash
# Entrypoint wrapper for Intel's Qwen3.5 AutoRound checkpoints, then exec "$@".
# transformers' rope validation rejects their config (it carries partial_rotary_factor, which the
# validation does not expect); transformers.patch (an input the image builder supplies, see
# containerfiles/README.md) makes the validation ignore that key. Applied once per container; a
# transformers that already accepts it, or that the patch no longer fits, is reported and left.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
site="$(python3 -c 'import importlib.util as u, pathlib as p; print(p.Path(list(u.find_spec("transformers").submodule_search_locations)[0]).parent)')"
if patch -p1 -N --dry-run --silent -d "$site" < "$here/transformers.patch" >/dev/null 2>&1; then
  patch -p1 -N --silent -d "$site" < "$here/transformers.patch"
  echo "fix-qwen3.5-autoround: applied transformers.patch" >&2
elif patch -p1 -R --dry-run --silent -d "$site" < "$here/transformers.patch" >/dev/null 2>&1; then
  echo "fix-qwen3.5-autoround: transformers.patch already in effect" >&2
else
  echo "fix-qwen3.5-autoround: warning: transformers.patch does not fit this transformers; continuing without it" >&2
fi
exec "$@"

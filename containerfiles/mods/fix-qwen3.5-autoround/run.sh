#!/bin/bash
# Entrypoint wrapper for Intel's Qwen3.5 AutoRound checkpoints, then exec "$@".
# Their config carries partial_rotary_factor, and transformers' rope validation adds that key to
# the config's ignored keys with a set union that fails when config.json gave them as a list;
# fixes/transformers-rope-partial-rotary.py makes the union work for any collection. Applied at
# start because the transformers differs between the images this lane may run on; a
# transformers that has no such union, or that the fix no longer fits, is reported and left.
set -euo pipefail
tools="${SPARKCTL_IMAGE_TOOLS:-/opt/sparkctl}"
site="$(python3 -c 'import importlib.util as u, pathlib as p; print(p.Path(list(u.find_spec("transformers").submodule_search_locations)[0]).parent)')"
python3 "$tools/scripts/srcfix.py" --lenient "$tools/fixes/transformers-rope-partial-rotary.py" "$site" ||
  echo "fix-qwen3.5-autoround: warning: the rope fix could not run (exit $?); continuing without it" >&2
exec "$@"

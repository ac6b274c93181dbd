#!/bin/bash
# Entrypoint wrapper for Intel's Qwen3-Coder-Next AutoRound checkpoint, then exec "$@".
# gate_quant.py makes vLLM's Qwen3-Next MoE router gate honour the checkpoint's quantisation
# (a regression built it unquantised, so the AutoRound weights did not load).
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
python3 "$here/gate_quant.py"
exec "$@"

#!/bin/bash
# Entrypoint wrapper for the Qwen3.5/3.6 MoE lanes: the fix-qwen3-coder-next fixes, then (when
# the model names a template source) the fix-qwen3.5-chat-template installer, then exec "$@".
set -euo pipefail
mods="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
"$mods/fix-qwen3-coder-next/run.sh" true
if [[ -n "${QWEN35_CHAT_TEMPLATE_MODEL_ID:-}" || -n "${QWEN35_CHAT_TEMPLATE_SOURCE:-}" ]]; then
  "$mods/fix-qwen3.5-chat-template/run.sh" true
fi
exec "$@"

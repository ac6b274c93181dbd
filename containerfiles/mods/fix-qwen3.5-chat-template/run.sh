#!/bin/bash
# Entrypoint wrapper: install a Qwen3.5 chat template as a file vLLM can load, then exec "$@".
#
# Qwen3.5/3.6 lanes start vLLM with `--chat-template /workspace/unsloth.jinja`. That file is not
# shipped in the image: it is the `chat_template.jinja` of a Qwen3.5 checkpoint in the shared HF
# cache, copied at each start so it always matches the weights sparkctl pulled. Looked up:
#   QWEN35_CHAT_TEMPLATE_SOURCE      a file to use as is, else
#   QWEN35_CHAT_TEMPLATE_MODEL_ID    a repo in the cache (org/name): the snapshot its `main` ref
#                                    names, else any snapshot that has a chat_template.jinja
#   QWEN35_CHAT_TEMPLATE_CACHE_ROOT  the hub cache (default: $HF_HOME/hub)
#   QWEN35_CHAT_TEMPLATE_DESTINATION where to write it (default: $WORKSPACE_DIR/unsloth.jinja)
# Without a template it exits 1 with what to pull: vLLM would otherwise fail later and less clearly.
set -euo pipefail

workspace="${WORKSPACE_DIR:-/workspace}"
cache_root="${QWEN35_CHAT_TEMPLATE_CACHE_ROOT:-${HF_HOME:-/root/.cache/huggingface}/hub}"
destination="${QWEN35_CHAT_TEMPLATE_DESTINATION:-$workspace/unsloth.jinja}"
source_file="${QWEN35_CHAT_TEMPLATE_SOURCE:-}"
model_id="${QWEN35_CHAT_TEMPLATE_MODEL_ID:-}"

if [[ -z "$source_file" && -n "$model_id" ]]; then
  repo_dir="$cache_root/models--${model_id//\//--}"
  if [[ -f "$repo_dir/refs/main" ]]; then
    commit="$(<"$repo_dir/refs/main")"
    [[ -f "$repo_dir/snapshots/$commit/chat_template.jinja" ]] && source_file="$repo_dir/snapshots/$commit/chat_template.jinja"
  fi
  if [[ -z "$source_file" ]]; then
    shopt -s nullglob
    found=("$repo_dir"/snapshots/*/chat_template.jinja)
    shopt -u nullglob
    (( ${#found[@]} > 0 )) && source_file="${found[0]}"
  fi
fi

if [[ -z "$source_file" || ! -f "$source_file" ]]; then
  echo "fix-qwen3.5-chat-template: no chat template found" \
       "(QWEN35_CHAT_TEMPLATE_MODEL_ID=${model_id:-unset}, cache $cache_root)." \
       "Pull that model's weights first: sparkctl pull MODEL fetches them for the models that need them." >&2
  exit 1
fi

mkdir -p "$(dirname -- "$destination")"
cp -- "$source_file" "$destination"
echo "fix-qwen3.5-chat-template: $destination from $source_file" >&2
exec "$@"

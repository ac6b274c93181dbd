#!/bin/bash
# Build-time fixes that make cyankiwi/GLM-4.7-Flash-AWQ-4bit run (and run fast) on the TF5 image.
# Run once by containerfiles/vllm-glm-4.7-flash-awq/Containerfile, never at container start.
#   transformers    installed from TRANSFORMERS_REPO@TRANSFORMERS_REF: GLM-4.7-Flash's model type
#                   (glm4_moe_lite) is only in transformers' main branch at the time of the recipe
#   glm47_flash.patch     MLA speed patch: the Triton MLA decode picks num_kv_splits from the
#                         sequence length (max(32, min(128, max_seq_len // 1500))) instead of a
#                         constant                              (input the builder supplies)
#   glm47_vllm_bug.patch  the upstream vLLM fix for MLA attention with this checkpoint
#                                                                (input the builder supplies)
#   glm_guards.py   kv_b_proj weight-dtype and CUTLASS capability guards (see that file)
# Unlike the runtime mods, every step here must succeed: a half-patched image would be shipped.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
: "${TRANSFORMERS_REPO:?}" "${TRANSFORMERS_REF:?TRANSFORMERS_REF must name the transformers commit to install (see containerfiles/README.md)}"

git clone --filter=blob:none "$TRANSFORMERS_REPO" /tmp/transformers
git -C /tmp/transformers checkout --detach "$TRANSFORMERS_REF"
uv pip install --no-deps /tmp/transformers
rm -rf /tmp/transformers
python3 -c 'from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES as m; assert "glm4_moe_lite" in m, "this transformers has no glm4_moe_lite"'

site="$(python3 -c 'import importlib.util as u, pathlib as p; print(p.Path(list(u.find_spec("vllm").submodule_search_locations)[0]).parent)')"
for diff in glm47_flash.patch glm47_vllm_bug.patch; do
  if patch -p1 -R --dry-run --silent -d "$site" < "$here/$diff" >/dev/null 2>&1; then
    echo "apply.sh: $diff already in effect"
  else
    patch -p1 -N -d "$site" < "$here/$diff"   # fails the build when it does not fit
  fi
done
python3 "$here/glm_guards.py"
python3 /opt/sparkctl/scripts/guard-vllm-ops.py

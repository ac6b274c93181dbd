#!/bin/bash
# Build-time fixes that make cyankiwi/GLM-4.7-Flash-AWQ-4bit run (and run fast) on the TF5 image.
# Run once by containerfiles/vllm-glm-4.7-flash-awq/Containerfile, never at container start.
#   transformers    TRANSFORMERS_VERSION from PyPI: GLM-4.7-Flash's model type (glm4_moe_lite)
#                   arrived in transformers 5.0.0rc3, after the TF5 image's 5.0.0rc1
#   fixes/vllm-triton-mla-splits.py   MLA speed: the Triton MLA decode splits the KV scan by
#                                     sequence length instead of a constant 4
#   glm_guards.py   the MLA kv_b_proj weight-dtype guard (this AWQ checkpoint's kv_b_proj has no
#                   `weight`) and the CUTLASS capability guards (see that file)
# Unlike the runtime mods, every step here must succeed: a half-patched image would be shipped.
set -euo pipefail
here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
tools="${SPARKCTL_IMAGE_TOOLS:-/opt/sparkctl}"
: "${TRANSFORMERS_VERSION:?TRANSFORMERS_VERSION must name the transformers release to install}"

uv pip install --no-deps "transformers==${TRANSFORMERS_VERSION}"
python3 -c 'from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES as m; assert "glm4_moe_lite" in m, "this transformers has no glm4_moe_lite"'

site="$(python3 -c 'import importlib.util as u, pathlib as p; print(p.Path(list(u.find_spec("vllm").submodule_search_locations)[0]).parent)')"
python3 "$tools/scripts/srcfix.py" "$tools/fixes/vllm-triton-mla-splits.py" "$site"
python3 "$here/glm_guards.py"
python3 "$tools/scripts/guard-vllm-ops.py"

#!/bin/sh
# vllm-build-requirements.sh  (run in a vLLM source tree)
#
# Prepares a vLLM checkout to be built against the torch already installed, and prints the
# path of its build requirements for `pip install -r`. vLLM moved both between releases:
# use_existing_torch.py went from the top of the tree to tools/, and requirements/build.txt
# became requirements/build/cuda.txt (0.20). Whatever the ref, this finds them, or fails
# naming what it looked for. use_existing_torch.py's own report goes to stderr, so stdout is
# only the path.
set -eu
for script in tools/use_existing_torch.py use_existing_torch.py; do
  if [ -f "$script" ]; then
    python3 "$script" >&2
    break
  fi
done
[ -f "${script:-}" ] || { echo "error: no use_existing_torch.py (tools/ or top level) in $(pwd)" >&2; exit 1; }
for reqs in requirements/build/cuda.txt requirements/build.txt; do
  if [ -f "$reqs" ]; then
    echo "$reqs"
    exit 0
  fi
done
echo "error: no build requirements (requirements/build/cuda.txt or requirements/build.txt) in $(pwd)" >&2
exit 1

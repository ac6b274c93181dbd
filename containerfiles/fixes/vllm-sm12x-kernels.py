"""vLLM's CMakeLists.txt: do not build the SM100-family FP4 and CUTLASS scaled-mm kernels for SM 12.x.

For the general-purpose image (localhost/sparkctl-vllm), built from vLLM at VLLM_REF. Some vLLM
versions list SM 12.x next to SM 10.x in the architecture lists of these kernel groups; compiled
for the GB10 (12.1) they fail to build or fail at run time, while the SM 12.x-only groups beside
them are fine. So in every FP4_ARCHS / SCALED_MM_ARCHS list that targets SM 10.x, the 12.x
entries go. vLLM releases that keep the two families apart already need nothing ("in effect").
Applied with `srcfix.py fixes/vllm-sm12x-kernels.py VLLM_SOURCE_DIR` before the build.
"""

from __future__ import annotations

import re

from srcfix import Edit

# cuda_archs_loose_intersection(FP4_ARCHS "10.0f;11.0f;12.0f" "${CUDA_ARCHS}")
LIST = r'(?P<head>cuda_archs_loose_intersection\((?:FP4|SCALED_MM)_ARCHS ")(?P<archs>[^"]*)"'


def _archs(match: re.Match[str]) -> list[str]:
    return [a for a in match["archs"].split(";") if a.strip()]


def _mixed(archs: list[str]) -> bool:
    return any(a.startswith("10.") for a in archs) and any(a.startswith("12.") for a in archs)


def _drop_sm12x(match: re.Match[str]) -> str:
    archs = _archs(match)
    if not _mixed(archs):
        return match.group(0)
    return f'{match["head"]}{";".join(a for a in archs if not a.startswith("12."))}"'


def _separated(text: str) -> bool:
    """Lists for SM 10.x exist and none of them names SM 12.x."""
    lists = [_archs(m) for m in re.finditer(LIST, text)]
    sm100 = [a for a in lists if any(x.startswith("10.") for x in a)]
    return bool(sm100) and not any(_mixed(a) for a in sm100)


EDITS = [
    Edit(
        what="SM100-family FP4 and scaled-mm kernels are not built for SM 12.x",
        paths=("CMakeLists.txt",),
        pattern=LIST,
        replacement=_drop_sm12x,
        done=_separated,
        expect=None,
    ),
]

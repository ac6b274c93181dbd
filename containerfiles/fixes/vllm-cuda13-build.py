"""vLLM source, TF5 track: build on the MXFP4 image's CUDA 13 and NGC PyTorch.

For localhost/sparkctl-vllm-tf5, built from upstream vLLM at VLLM_REF (50cd5674b by default).
Applied with `srcfix.py fixes/vllm-cuda13-build.py VLLM_SOURCE_DIR` before the build.

* csrc/cache_kernels.cu calls cuMemcpyBatchAsync with a `failIdx` argument. CUDA 13's header
  maps that name to the _v2 entry point, which has no such parameter, so the call does not
  compile: the argument goes, and the error message no longer names an index. (Later vLLM
  resolves the function at run time and needs nothing: "in effect".)
* The `_C_stable_libtorch` extension is not built and its import becomes optional. The
  reference recipe, which ran on the Spark, builds this commit without it against the same NGC
  PyTorch. At this commit the extension holds four ops: the grouped FP8 and INT8 quantisations,
  whose callers scripts/guard-vllm-ops.py sends to their Triton paths, `permute_cols`, which
  vLLM itself registers only when present (and only Hopper's Machete kernels use), and its
  bindings. Later vLLM moved the CUTLASS scaled-mm and FP4 kernels into it as well; dropping it
  there would lose them, so this fix does not fit a vLLM whose extension builds any other
  source, and the build stops.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from srcfix import Edit

DIRECT_CALL_WITH_FAIL_IDX = r"\bcuMemcpyBatchAsync\([^;]*&fail_idx"
STABLE_EXT = r'CMakeExtension\(name="vllm\._C_stable_libtorch"\)'
STABLE_IMPORT = r"^import vllm\._C_stable_libtorch\b"
STABLE_SOURCES = {
    "csrc/libtorch_stable/torch_bindings.cpp",
    "csrc/libtorch_stable/permute_cols.cu",
    "csrc/libtorch_stable/quantization/w8a8/fp8/per_token_group_quant.cu",
    "csrc/libtorch_stable/quantization/w8a8/int8/per_token_group_quant.cu",
}


def _absent(pattern: str) -> Callable[[str], bool]:
    return lambda text: re.search(pattern, text, re.MULTILINE) is None


def _stable_ext_is_small(cmake: str) -> bool:
    """Every source the _C_stable_libtorch target builds is one of STABLE_SOURCES."""
    lists = re.findall(r"(?:\bset\(|\blist\(APPEND\s+)VLLM_STABLE_EXT_SRC\b([^)]*)\)", cmake)
    return all(word.strip('"') in STABLE_SOURCES for words in lists for word in words.split())


def _import_guarded(cuda_py: str) -> bool:
    """No import of the extension is left outside sparkctl's try: block."""
    unguarded = re.sub(r"try:  # sparkctl[^\n]*\n[ \t]+import vllm\._C_stable_libtorch[^\n]*\n", "", cuda_py)
    return re.search(r"\b_C_stable_libtorch\b", unguarded) is None


EDITS = [
    Edit(
        what="_C_stable_libtorch holds only ops vLLM can do without",
        paths=("CMakeLists.txt",),
        pattern=None,
        replacement="",
        done=_stable_ext_is_small,
        misfit="it builds more than the four sources this fix knows: dropping it would lose kernels",
    ),
    Edit(
        what="cuMemcpyBatchAsync is called with CUDA 13's signature (no failIdx)",
        paths=("csrc/cache_kernels.cu",),
        pattern=(
            r"^[ \t]*size_t fail_idx = 0;\n"
            r"(?P<call>(?P<indent>[ \t]*)CUresult result = cuMemcpyBatchAsync\([^;]*?)&fail_idx,\s*"
            r"(?P<rest>[^;]*?\);\n)"
            r"(?P<check>[ \t]*TORCH_CHECK\(result == CUDA_SUCCESS,\s*)"
            r'"cuMemcpyBatchAsync failed at index ",\s*fail_idx,\s*" with error ",'
        ),
        replacement=(
            r"\g<indent>// sparkctl: CUDA 13's cuMemcpyBatchAsync (_v2) has no failIdx parameter\n"
            r'\g<call>\g<rest>\g<check>"cuMemcpyBatchAsync failed with error ",'
        ),
        done=_absent(DIRECT_CALL_WITH_FAIL_IDX),
    ),
    Edit(
        what="the _C_stable_libtorch extension is not built",
        paths=("setup.py",),
        pattern=rf"^(?P<indent>[ \t]+)ext_modules\.append\({STABLE_EXT}\)[ \t]*$",
        replacement=r"\g<indent>pass  # sparkctl: not built (fixes/vllm-cuda13-build.py)",
        done=_absent(STABLE_EXT),
    ),
    Edit(
        what="vLLM starts without _C_stable_libtorch",
        paths=("vllm/platforms/cuda.py",),
        pattern=rf"{STABLE_IMPORT}.*$",
        replacement=(
            "try:  # sparkctl: not built for the GB10 image (fixes/vllm-cuda13-build.py)\n"
            "    import vllm._C_stable_libtorch  # noqa\n"
            "except ImportError:\n"
            "    pass"
        ),
        done=_import_guarded,
    ),
]

"""sparkctl's source fixes for the GB10 images (containerfiles/fixes/, applied by
containerfiles/scripts/srcfix.py): the engine's states and exit codes, and every shipped fix run
against the code it targets, in the form that needs it and in the forms that do not (ours after
a first run, and upstream's own later fix). The excerpts below keep the lines each fix anchors
on exactly as vLLM and transformers have them; the fixes were also run against the vLLM 0.16 to
0.20 and transformers 5.0.0rc1, 5.2 and 5.5 releases (see containerfiles/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sparkctl.tools.images import SHIPPED_CONTAINERFILES as CF

sys.path.insert(0, str(CF / "scripts"))
import srcfix

SRCFIX = CF / "scripts/srcfix.py"
FIXES = CF / "fixes"


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def srcfix_run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SRCFIX), *map(str, args)], capture_output=True, text=True, check=False
    )


# ------------------------------------------------------------------------------------ the engine
TOY = """\
from srcfix import Edit

EDITS = [
    Edit(what="greeting is polite", paths=("a.txt",), pattern=r"^hi$", replacement="hello", done=r"^hello$"),
    Edit(what="b counts to two", paths=("old/b.txt", "b.txt"), pattern=r"^one$", replacement="one\\ntwo",
         done=r"^two$"),
]
"""


def test_applies_once_then_reports_in_effect(tmp_path: Path) -> None:
    fix = tree(tmp_path, {"toy.py": TOY})
    root = tree(tmp_path / "src", {"a.txt": "hi\n", "b.txt": "one\n"})
    first = srcfix_run(fix / "toy.py", root)
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines() == [
        "toy: greeting is polite: applied (a.txt)",
        "toy: b counts to two: applied (b.txt)",
    ]
    assert snapshot(root) == {"a.txt": "hello\n", "b.txt": "one\ntwo\n"}
    again = srcfix_run(fix / "toy.py", root)
    assert again.returncode == 0 and again.stderr.count("in effect") == 2
    assert snapshot(root) == {"a.txt": "hello\n", "b.txt": "one\ntwo\n"}
    assert srcfix_run("--check", fix / "toy.py", root).returncode == 0


def test_strict_writes_nothing_when_one_edit_does_not_fit(tmp_path: Path) -> None:
    fix = tree(tmp_path, {"toy.py": TOY})
    root = tree(tmp_path / "src", {"a.txt": "hi\n", "b.txt": "moved on\n"})
    strict = srcfix_run(fix / "toy.py", root)
    assert strict.returncode == 1
    assert "error: toy: b counts to two: does not fit (b.txt): its anchor is not there" in strict.stderr
    assert snapshot(root) == {"a.txt": "hi\n", "b.txt": "moved on\n"}  # a half-fixed tree is worse
    lenient = srcfix_run("--lenient", fix / "toy.py", root)
    assert lenient.returncode == 0 and "warning: toy: b counts to two: does not fit" in lenient.stderr
    assert snapshot(root) == {"a.txt": "hello\n", "b.txt": "moved on\n"}


def test_check_reports_without_writing(tmp_path: Path) -> None:
    fix = tree(tmp_path, {"toy.py": TOY})
    root = tree(tmp_path / "src", {"a.txt": "hi\n", "old/b.txt": "one\n"})
    check = srcfix_run("--check", fix / "toy.py", root)
    assert check.returncode == 1
    assert "toy: b counts to two: would apply (old/b.txt)" in check.stderr  # the first path that exists
    assert snapshot(root) == {"a.txt": "hi\n", "old/b.txt": "one\n"}


def test_an_ambiguous_anchor_or_a_wrong_edit_does_not_fit(tmp_path: Path) -> None:
    twice = tree(tmp_path / "twice", {"a.txt": "hi\nhi\n", "b.txt": "two\n"})
    outcomes, texts = srcfix.plan(twice, srcfix.load(tree(tmp_path, {"toy.py": TOY}) / "toy.py"))
    assert [o.state for o in outcomes] == ["does not fit", "in effect"]
    assert outcomes[0].detail == "its anchor is there 2 times, expected 1" and texts == {}
    wrong = srcfix.Edit(what="w", paths=("a.txt",), pattern=r"^hi$", replacement="hey", done=r"^hello$")
    outcomes, texts = srcfix.plan(tree(tmp_path / "w", {"a.txt": "hi\n"}), [wrong])
    assert outcomes[0].state == "does not fit" and "still lacks the change" in outcomes[0].detail
    missing = srcfix.Edit(what="m", paths=("x.txt", "y.txt"), pattern="a", replacement="b", done="b")
    outcomes, _ = srcfix.plan(tmp_path / "w", [missing])
    assert outcomes[0].detail == "none of x.txt, y.txt exists"


def test_a_failed_strict_run_says_what_it_did_not_write(tmp_path: Path) -> None:
    fix = tree(tmp_path, {"toy.py": TOY})
    root = tree(tmp_path / "src", {"a.txt": "hi\n"})
    result = srcfix_run(fix / "toy.py", root)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "toy: greeting is polite: not written (a.txt)",
        "error: toy: b counts to two: does not fit: none of old/b.txt, b.txt exists",
        "toy: nothing written: 1 of 2 edits do not fit",
    ]


def test_an_edit_that_breaks_python_does_not_fit_and_line_ends_survive(tmp_path: Path) -> None:
    breaking = srcfix.Edit(
        what="b", paths=("m.py",), pattern=r"^x = 1$", replacement="x = (", done=r"^x = \($"
    )
    outcomes, _ = srcfix.plan(tree(tmp_path / "b", {"m.py": "x = 1\n"}), [breaking])
    assert outcomes[0].state == "does not fit" and "not valid Python: line 1" in outcomes[0].detail
    fix = tree(tmp_path, {"toy.py": TOY})
    root = tmp_path / "crlf"
    root.mkdir()
    (root / "a.txt").write_bytes(b"hi\r\nthere\r\n")
    (root / "b.txt").write_bytes(b"two\r\n")
    assert srcfix_run(fix / "toy.py", root).returncode == 0
    assert (root / "a.txt").read_bytes() == b"hello\r\nthere\r\n"


def test_usage_errors(tmp_path: Path) -> None:
    assert srcfix_run(FIXES / "vllm-null-blocks.py").returncode == 2
    assert srcfix_run("--force", FIXES / "vllm-null-blocks.py", tmp_path).returncode == 2
    assert srcfix_run(FIXES / "vllm-null-blocks.py", tmp_path / "nowhere").returncode == 2
    empty = tree(tmp_path, {"empty.py": "EDITS = []\n"})
    result = srcfix_run(empty / "empty.py", tmp_path)
    assert result.returncode == 1 and "defines no EDITS list" in result.stderr


# ------------------------------------------------------------------------- the shipped fixes
CACHE_KERNELS_50CD5674B = """\
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  CUmemcpyAttributes attr = {};
  attr.srcAccessOrder = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM;
  size_t attrs_idx = 0;
  size_t fail_idx = 0;
  CUresult result = cuMemcpyBatchAsync(
      reinterpret_cast<CUdeviceptr*>(const_cast<int64_t*>(dst_data)),
      reinterpret_cast<CUdeviceptr*>(const_cast<int64_t*>(src_data)),
      reinterpret_cast<size_t*>(const_cast<int64_t*>(size_data)),
      static_cast<size_t>(n), &attr, &attrs_idx, 1, &fail_idx,
      static_cast<CUstream>(stream));
  TORCH_CHECK(result == CUDA_SUCCESS, "cuMemcpyBatchAsync failed at index ",
              fail_idx, " with error ", result);
"""
CACHE_KERNELS_0_20 = """\
    size_t fail_idx = 0;
    CUresult result = batch_fn(reinterpret_cast<CUdeviceptr*>(dst_data),
                               static_cast<size_t>(n), &attr, &attrs_idx, 1,
                               &fail_idx, static_cast<CUstream>(stream));
"""
SETUP_PY = """\
if _build_custom_ops():
    ext_modules.append(CMakeExtension(name="vllm._C"))
    # also _is_hip() once https://github.com/vllm-project/vllm/issues/35163 is
    # fixed
    if _is_cuda():
        ext_modules.append(CMakeExtension(name="vllm._C_stable_libtorch"))
"""
STABLE_CMAKE = """\
  set(VLLM_STABLE_EXT_SRC
    "csrc/libtorch_stable/torch_bindings.cpp")

  if(VLLM_GPU_LANG STREQUAL "CUDA")
    list(APPEND VLLM_STABLE_EXT_SRC
      "csrc/libtorch_stable/permute_cols.cu"
      "csrc/libtorch_stable/quantization/w8a8/fp8/per_token_group_quant.cu"
      "csrc/libtorch_stable/quantization/w8a8/int8/per_token_group_quant.cu")
  endif()
    set_gencode_flags_for_srcs(
      SRCS "${VLLM_STABLE_EXT_SRC}"
      CUDA_ARCHS "${CUDA_ARCHS}")
"""
# vLLM 0.20 moved the CUTLASS kernels into the extension
STABLE_CMAKE_0_20 = STABLE_CMAKE + '    list(APPEND VLLM_STABLE_EXT_SRC "${SRCS}")\n'
CUDA_PY = "# import custom ops, trigger op registration\nimport vllm._C  # noqa\nimport vllm._C_stable_libtorch  # noqa\nimport vllm.envs as envs\n"


def test_cuda13_build_fix(tmp_path: Path) -> None:
    files = {
        "CMakeLists.txt": STABLE_CMAKE,
        "csrc/cache_kernels.cu": CACHE_KERNELS_50CD5674B,
        "setup.py": SETUP_PY,
        "vllm/platforms/cuda.py": CUDA_PY,
    }
    # Where dropping the extension would lose kernels, nothing is touched.
    bigger = tree(tmp_path / "bigger", {**files, "CMakeLists.txt": STABLE_CMAKE_0_20})
    refused = srcfix_run(FIXES / "vllm-cuda13-build.py", bigger)
    assert refused.returncode == 1 and "dropping it would lose kernels" in refused.stderr
    assert refused.stderr.count(": not written") == 3
    assert snapshot(bigger) == {**files, "CMakeLists.txt": STABLE_CMAKE_0_20}
    # An import it does not know is not mistaken for a guarded one.
    other = tree(
        tmp_path / "other", {**files, "vllm/platforms/cuda.py": "from vllm import _C_stable_libtorch\n"}
    )
    refused = srcfix_run(FIXES / "vllm-cuda13-build.py", other)
    assert "vLLM starts without _C_stable_libtorch: does not fit" in refused.stderr

    root = tree(tmp_path / "root", files)
    result = srcfix_run(FIXES / "vllm-cuda13-build.py", root)
    assert result.returncode == 0 and result.stderr.count(": applied") == 3, result.stderr
    assert "_C_stable_libtorch holds only ops vLLM can do without: holds" in result.stderr
    kernels = (root / "csrc/cache_kernels.cu").read_text()
    assert "fail_idx" not in kernels
    assert "static_cast<size_t>(n), &attr, &attrs_idx, 1, static_cast<CUstream>(stream));" in kernels
    assert '"cuMemcpyBatchAsync failed with error ", result);' in kernels
    setup = (root / "setup.py").read_text()
    compile(setup, "setup.py", "exec")
    assert 'CMakeExtension(name="vllm._C")' in setup and '_C_stable_libtorch"' not in setup
    platform = (root / "vllm/platforms/cuda.py").read_text()
    assert "try:" in platform and "except ImportError:" in platform
    # vllm._C_stable_libtorch is really optional now: the module runs without it
    stub = tree(tmp_path / "stub", {"vllm/__init__.py": "", "vllm/_C.py": "", "vllm/envs.py": ""})
    exec_env = {**os.environ, "PYTHONPATH": str(stub)}
    run = subprocess.run([sys.executable, "-c", platform], env=exec_env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert srcfix_run("--check", FIXES / "vllm-cuda13-build.py", root).returncode == 0
    # vLLM 0.20 calls the entry point it resolved at run time: nothing to fix there.
    later = tree(
        tmp_path / "later",
        {
            "CMakeLists.txt": "",
            "csrc/cache_kernels.cu": CACHE_KERNELS_0_20,
            "setup.py": "",
            "vllm/platforms/cuda.py": "",
        },
    )
    assert srcfix_run("--check", FIXES / "vllm-cuda13-build.py", later).returncode == 0


CMAKE = """\
  if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 13.0)
    cuda_archs_loose_intersection(SCALED_MM_ARCHS "12.0f" "${CUDA_ARCHS}")
  endif()
  if(${CMAKE_CUDA_COMPILER_VERSION} VERSION_GREATER_EQUAL 13.0)
    cuda_archs_loose_intersection(FP4_ARCHS "10.0f;11.0f;12.0f" "${CUDA_ARCHS}")
  else()
    cuda_archs_loose_intersection(FP4_ARCHS "10.0a;10.1a;12.0a;12.1a" "${CUDA_ARCHS}")
  endif()
    cuda_archs_loose_intersection(SCALED_MM_ARCHS "10.0f;11.0f" "${CUDA_ARCHS}")
    cuda_archs_loose_intersection(SCALED_MM_ARCHS "10.0a;10.1a;10.3a;12.0a;12.1a" "${CUDA_ARCHS}")
  cuda_archs_loose_intersection(MARLIN_ARCHS "8.0;10.0;12.0" "${CUDA_ARCHS}")
"""


def test_sm12x_kernels_fix(tmp_path: Path) -> None:
    root = tree(tmp_path, {"CMakeLists.txt": CMAKE})
    assert srcfix_run(FIXES / "vllm-sm12x-kernels.py", root).returncode == 0
    text = (root / "CMakeLists.txt").read_text()
    assert 'FP4_ARCHS "10.0f;11.0f" ' in text and 'FP4_ARCHS "10.0a;10.1a" ' in text
    assert 'SCALED_MM_ARCHS "10.0a;10.1a;10.3a" ' in text
    assert 'SCALED_MM_ARCHS "12.0f" ' in text  # the SM 12.x kernels themselves stay
    assert 'MARLIN_ARCHS "8.0;10.0;12.0"' in text  # other kernel groups are not this fix's business
    assert srcfix_run("--check", FIXES / "vllm-sm12x-kernels.py", root).returncode == 0
    # A CMakeLists without any SM100 list: the fix cannot tell, so the build stops.
    nothing = tree(
        tmp_path / "n", {"CMakeLists.txt": 'cuda_archs_loose_intersection(FP4_ARCHS "12.0f" "")\n'}
    )
    assert srcfix_run(FIXES / "vllm-sm12x-kernels.py", nothing).returncode == 1


WEIGHT_UTILS = """\
import os


def fastsafetensors_weights_iterator(
    hf_weights_files: list[str],
    use_tqdm_on_load: bool,
):
    pg = SingleGroup()
    device = torch.device(f"cuda:{pg.rank()}")
    weight_files_sub_lists = [
        hf_weights_files[i : i + pg.size()]
        for i in range(0, len(hf_weights_files), pg.size())
    ]
    return weight_files_sub_lists
"""
WEIGHT_UTILS_UPSTREAM_SORT = WEIGHT_UTILS.replace(
    "    weight_files_sub_lists = [",
    "    hf_weights_files = sorted(hf_weights_files, key=_natural_sort_key)\n    weight_files_sub_lists = [",
)


def test_fastsafetensors_order_fix(tmp_path: Path) -> None:
    rel = "vllm/model_executor/model_loader/weight_utils.py"
    root = tree(tmp_path, {rel: WEIGHT_UTILS})
    assert srcfix_run(FIXES / "vllm-fastsafetensors-order.py", root).returncode == 0
    module: dict[str, object] = {}
    exec(compile((root / rel).read_text(), rel, "exec"), module)

    class SingleGroup:
        def size(self) -> int:
            return 2

        def rank(self) -> int:
            return 0

    module.update(SingleGroup=SingleGroup, torch=type("torch", (), {"device": staticmethod(str)}))
    shards = [f"/hub/model-{i:d}-of-12.safetensors" for i in (10, 2, 1, 12, 11, 3)]
    groups = module["fastsafetensors_weights_iterator"](shards, False)  # type: ignore[operator]
    assert [[Path(f).name.split("-")[1] for f in g] for g in groups] == [
        ["1", "2"],
        ["3", "10"],
        ["11", "12"],
    ]
    assert srcfix_run("--check", FIXES / "vllm-fastsafetensors-order.py", root).returncode == 0
    upstream = tree(tmp_path / "up", {rel: WEIGHT_UTILS_UPSTREAM_SORT})
    check = srcfix_run("--check", FIXES / "vllm-fastsafetensors-order.py", upstream)
    assert check.returncode == 0 and check.stderr.count("in effect") == 2


KV_MANAGER = """\
    def cache_blocks(self, request: Request, num_tokens: int) -> None:
        num_cached_blocks_before = self.num_cached_block.get(request.request_id, 0)
        super().cache_blocks(request, num_tokens)
        num_cached_blocks_after = self.num_cached_block.get(request.request_id, 0)
        if num_cached_blocks_after > num_cached_blocks_before:
            for block in self.req_to_blocks[request.request_id][
                num_cached_blocks_before:num_cached_blocks_after
            ]:
                assert block.block_hash is not None
                self.cached_blocks_this_step.add(block.block_hash)
"""


def test_null_blocks_fix(tmp_path: Path) -> None:
    rel = "vllm/v1/core/single_type_kv_cache_manager.py"
    root = tree(tmp_path, {rel: KV_MANAGER})
    assert srcfix_run(FIXES / "vllm-null-blocks.py", root).returncode == 0
    text = (root / rel).read_text()
    assert (
        "            ]:\n                if block.is_null:  # sparkctl\n                    continue\n"
        "                assert block.block_hash is not None\n"
    ) in text
    assert srcfix_run("--check", FIXES / "vllm-null-blocks.py", root).returncode == 0
    # upstream's own skip (vLLM 0.17 on) is recognised, and so is a vLLM without the loop (0.16)
    upstream = tree(tmp_path / "up", {rel: text.replace("  # sparkctl", "")})
    assert "in effect" in srcfix_run("--check", FIXES / "vllm-null-blocks.py", upstream).stderr
    older = tree(
        tmp_path / "old", {rel: "    def cache_blocks(self, request, num_tokens):\n        return\n"}
    )
    assert srcfix_run("--check", FIXES / "vllm-null-blocks.py", older).returncode == 0
    # an unguarded assert that is not where the fix knows it: a person must look
    moved = tree(tmp_path / "moved", {rel: "for b in blocks:\n    assert block.block_hash is not None\n"})
    assert "does not fit" in srcfix_run("--lenient", FIXES / "vllm-null-blocks.py", moved).stderr


def _kernel(name: str, typed: bool) -> str:
    annotation = ": tl.int64" if typed else ""
    return (
        f"@triton.jit\ndef {name}(\n    a_ptr,\n    # (A has M rows).\n"
        f"    stride_am{annotation},\n    stride_bbe{annotation},  # bias expert stride\n"
        f"    group_n: tl.constexpr,\n):\n    offs = stride_am * 2\n\n\n"
    )


def test_moe_untyped_strides_fix(tmp_path: Path) -> None:
    rel = "vllm/model_executor/layers/fused_moe/fused_moe.py"
    typed = _kernel("fused_moe_kernel_gptq_awq", True) + _kernel("fused_moe_kernel", True)
    other = "def helper(\n    stride_x: tl.int64,\n):\n    pass\n"
    root = tree(tmp_path, {rel: typed + other})
    result = srcfix_run(FIXES / "vllm-moe-untyped-strides.py", root)
    assert result.returncode == 0 and result.stderr.count(": applied") == 2, result.stderr
    text = (root / rel).read_text()
    assert text == _kernel("fused_moe_kernel_gptq_awq", False) + _kernel("fused_moe_kernel", False) + other
    assert srcfix_run("--check", FIXES / "vllm-moe-untyped-strides.py", root).returncode == 0
    gone = tree(tmp_path / "gone", {rel: other})
    assert "warning:" in srcfix_run("--lenient", FIXES / "vllm-moe-untyped-strides.py", gone).stderr


TRITON_MLA = """\
        # For batch invariance, use only 1 split to ensure deterministic reduction
        num_kv_splits = 1 if envs.VLLM_BATCH_INVARIANT else 4
"""


@pytest.mark.parametrize(
    ("max_seq_len", "splits"), [(100, 32), (60_000, 32), (96_000, 64), (150_000, 64), (1_000_000, 128)]
)
def test_triton_mla_splits_fix(tmp_path: Path, max_seq_len: int, splits: int) -> None:
    rel = "vllm/v1/attention/backends/mla/triton_mla.py"
    root = tree(tmp_path, {rel: TRITON_MLA})
    assert srcfix_run(FIXES / "vllm-triton-mla-splits.py", root).returncode == 0
    code = "\n".join(line.strip() for line in (root / rel).read_text().splitlines())
    scope: dict[str, Any] = {
        "envs": type("envs", (), {"VLLM_BATCH_INVARIANT": False}),
        "attn_metadata": type("m", (), {"max_seq_len": max_seq_len}),
    }
    exec(code, scope)
    assert scope["num_kv_splits"] == splits
    scope["envs"].VLLM_BATCH_INVARIANT = True
    exec(code, scope)
    assert scope["num_kv_splits"] == 1
    upstream = tree(
        tmp_path / "up", {rel: "            ideal_splits = max(1, attn_metadata.max_seq_len // 512)\n"}
    )
    assert srcfix_run("--check", FIXES / "vllm-triton-mla-splits.py", upstream).returncode == 0


ROPE_5_2 = """\
        if "partial_rotary_factor" in kwargs:
            ignore_keys_at_rope_validation = (
                set() if ignore_keys_at_rope_validation is None else ignore_keys_at_rope_validation
            )
            ignore_keys_at_rope_validation = ignore_keys_at_rope_validation | {"partial_rotary_factor"}
"""
ROPE_5_5 = '            self.ignore_keys_at_rope_validation = self.ignore_keys_at_rope_validation | {"partial_rotary_factor"}\n'
ROPE_5_0_RC1 = '            ignore_keys_at_rope_validation = {"partial_rotary_factor"}\n'


def test_rope_partial_rotary_fix(tmp_path: Path) -> None:
    rel = "transformers/modeling_rope_utils.py"
    for name, text, state in (
        ("52", ROPE_5_2, "applied"),
        ("55", ROPE_5_5, "applied"),
        ("rc1", ROPE_5_0_RC1, "in effect"),
    ):
        root = tree(tmp_path / name, {rel: text})
        result = srcfix_run(FIXES / "transformers-rope-partial-rotary.py", root)
        assert result.returncode == 0 and state in result.stderr, (name, result.stderr)
        assert srcfix_run("--check", FIXES / "transformers-rope-partial-rotary.py", root).returncode == 0
    fixed = (tmp_path / "52" / rel).read_text()
    assert 'set(ignore_keys_at_rope_validation) | {"partial_rotary_factor"}' in fixed
    # the point of it: keys read from config.json are a list
    body = "\n".join(line.strip() for line in fixed.splitlines()[1:])
    scope: dict[str, object] = {"ignore_keys_at_rope_validation": ["mrope_section"]}
    exec(body, scope)
    assert scope["ignore_keys_at_rope_validation"] == {"mrope_section", "partial_rotary_factor"}
    assert (
        'set(self.ignore_keys_at_rope_validation) | {"partial_rotary_factor"}'
        in (tmp_path / "55" / rel).read_text()
    )


def test_every_fix_is_documented_and_used() -> None:
    users = "\n".join(p.read_text() for p in [*CF.glob("*/Containerfile"), *CF.glob("mods/*/*.sh")])
    readme = (CF / "README.md").read_text()
    fixes = sorted(FIXES.glob("*.py"))
    assert fixes
    for fix in fixes:
        edits = srcfix.load(fix)
        assert all(len(e.what) > 10 for e in edits)
        assert fix.read_text().startswith('"""'), f"{fix.name} says what it fixes and why"
        assert f"fixes/{fix.name}" in users or ("fixes/$fix.py" in users and fix.stem in users), (
            f"{fix.name} is applied by no Containerfile or mod"
        )
        assert f"fixes/{fix.name}" in readme, f"{fix.name} is not in containerfiles/README.md"

"""The GB10 images can only be built on a Spark, so CI checks everything about them that can be
checked elsewhere: hadolint on every Containerfile, digest-pinned bases, the index against the
Containerfiles and the catalog, and the runtime mods and plugin the images carry, run for real
against stand-in site-packages."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from sparkctl.catalog import read_specs
from sparkctl.cli import cli
from sparkctl.errors import ImageIndexError, ImagesError
from sparkctl.paths import SHIPPED_CATALOG
from sparkctl.tools.images import SHIPPED_CONTAINERFILES, copied_files, instructions, load_index

ROOT = Path(__file__).resolve().parents[2]
CF = SHIPPED_CONTAINERFILES
HADOLINT = Path(sys.executable).parent / "hadolint"
CONTAINERFILES = sorted(CF.glob("*/Containerfile"))
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def froms(path: Path) -> list[str]:
    """Base images named by FROM, without build-stage aliases."""
    stages: set[str] = set()
    bases = []
    for word, rest in instructions(path):
        if word == "FROM":
            parts = rest.split()
            if parts[0] not in stages:
                bases.append(parts[0])
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
    return bases


def args_of(path: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for word, rest in instructions(path):
        if word == "ARG":
            name, sep, default = rest.partition("=")
            # A multi-stage file may repeat an ARG; the first declaration documents it.
            out.setdefault(name, default if sep else None)
    return out


def model_images() -> dict[str, list[str]]:
    specs, issues = read_specs([SHIPPED_CATALOG])
    assert not issues
    out: dict[str, list[str]] = {}
    for mid, (spec, _) in specs.items():
        if spec.engine.image:
            out.setdefault(spec.engine.image, []).append(mid)
    return out


# ---------------------------------------------------------------------------------------- linting
def test_there_is_a_containerfile_for_every_index_entry_and_no_other() -> None:
    index = load_index()
    assert sorted(i.containerfile for i in index.images.values()) == CONTAINERFILES
    assert len(CONTAINERFILES) >= 6


@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda p: p.parent.name)
def test_hadolint(containerfile: Path) -> None:
    proc = subprocess.run(
        [str(HADOLINT), "--config", str(CF / ".hadolint.yaml"), str(containerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_hadolint_ignore_says_why() -> None:
    config = (CF / ".hadolint.yaml").read_text().splitlines()
    for i, line in enumerate(config):
        if re.match(r"\s+- DL\d+", line) and config[i - 1].strip().startswith("- "):
            pytest.fail(f".hadolint.yaml ignores {line.strip()} without a comment above it")
    for path in CONTAINERFILES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("# hadolint ignore=") and "DL3007" not in line:
                above = lines[i - 1] if i else ""
                assert above.startswith("#") or lines[i - 2].startswith("#"), (
                    f"{path}:{i + 1}: unexplained {line}"
                )


@pytest.mark.parametrize("containerfile", CONTAINERFILES, ids=lambda p: p.parent.name)
def test_every_base_is_pinned_by_digest_or_is_a_sparkctl_image(containerfile: Path) -> None:
    index = load_index()
    for base in froms(containerfile):
        if base.startswith("localhost/"):
            assert index.by_tag(base) is not None, f"{containerfile}: {base} is not built by the index"
        else:
            assert DIGEST.search(base), f"{containerfile}: FROM {base} is not pinned by digest"


# -------------------------------------------------------------------------------------- the index
def test_the_index_matches_its_containerfiles() -> None:
    index = load_index()
    for image in index.images.values():
        cf = image.containerfile
        local = [b for b in froms(cf) if b.startswith("localhost/")]
        assert sorted(image.spec.bases) == sorted(local), f"{image.name}: bases vs FROM"
        declared = args_of(cf)
        assert set(declared) == set(image.spec.args), f"{image.name}: index args vs ARG lines"
        for name, arg in image.spec.args.items():
            assert declared[name] == arg.default, f"{image.name}: default of {name}"
            assert len(arg.help) > 10
        text = cf.read_text()
        for required in image.spec.requires:
            assert required in text, (
                f"{image.name}: {required} is required but the Containerfile never checks it"
            )
        # What the Containerfile copies from the context exists (supplied inputs excepted).
        for word, rest in instructions(cf):
            if word == "COPY" and "--from=" not in rest:
                for source in rest.split()[:-1]:
                    assert (CF / source).exists(), (
                        f"{image.name}: COPY {source}: no such file in containerfiles/"
                    )


def test_every_image_the_catalog_names_is_built_here_or_pinned() -> None:
    index = load_index()
    for image, models in model_images().items():
        if index.by_tag(image) is None:
            assert DIGEST.search(image), (
                f"{image} (used by {', '.join(models)}) is neither in the index nor pinned"
            )
    # and nothing in the index is built for no model
    used = set(model_images())
    for img in index.images.values():
        assert any(t in used for t in img.tags) or any(
            img.tags[0] in other.spec.bases for other in index.images.values()
        ), f"{img.name} is used by no model and no other image"


def test_what_the_catalog_expects_inside_its_images_is_there() -> None:
    """Entrypoint wrappers, the reasoning-parser plugin and the tiktoken directory the catalog's
    entries name exist in the image they run on (or in one of its bases)."""
    index = load_index()
    specs, _ = read_specs([SHIPPED_CATALOG])
    for mid, (spec, _) in specs.items():
        image = index.by_tag(spec.engine.image or "")
        if image is None:
            continue
        chain_text = "\n".join(step.containerfile.read_text() for step in index.build_order([image]))
        for word in spec.engine.entrypoint:
            if word.startswith("/workspace/mods/"):
                source = CF / word.removeprefix("/workspace/")
                assert source.is_file() and os.access(source, os.X_OK), (
                    f"{mid}: {source} missing or not executable"
                )
                assert "/workspace/mods" in chain_text, f"{mid}: {image.name} does not install the mods"
        for word in spec.engine.args:
            if word.startswith("/workspace/plugins/"):
                plugin = word.removeprefix("/workspace/")
                assert (CF / plugin).is_file() and f"COPY {plugin} {word}" in chain_text, f"{mid}: {word}"
        base = spec.engine.env.get("TIKTOKEN_ENCODINGS_BASE")
        if base:
            assert f"TIKTOKEN_ENCODINGS_BASE={base}" in chain_text and "fetch-tiktoken.sh" in chain_text, mid


def test_tiktoken_encodings_are_checked_against_their_digests() -> None:
    script = (CF / "scripts/fetch-tiktoken.sh").read_text()
    pins = dict(re.findall(r"^(\w+_base) ([0-9a-f]{64})$", script, re.M))
    # The digests tiktoken itself pins for these files.
    assert pins == {
        "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    }
    assert "sha256sum -c" in script and "set -eu" in script


def test_the_index_refuses_nonsense(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a/Containerfile").write_text("FROM scratch\n")
    (tmp_path / "index.toml").write_text(
        '[images.a]\ntags = ["docker.io/x:1"]\ncontainerfile = "a/Containerfile"\ndescription = "d"\n'
        'bases = ["localhost/nope:1"]\nrequires = ["../etc/passwd"]\n[images.a.args.lower]\nhelp = "h"\n'
        '[images.b]\ntags = ["localhost/b:1"]\ncontainerfile = "b/Containerfile"\ndescription = "d"\nextra = 1\n'
    )
    with pytest.raises(ImageIndexError) as e:
        load_index(tmp_path / "index.toml")
    text = str(e.value)
    assert "images.b.extra: unknown key" in text
    (tmp_path / "index.toml").write_text((tmp_path / "index.toml").read_text().split("[images.b]")[0])
    with pytest.raises(ImageIndexError) as e:
        load_index(tmp_path / "index.toml")
    lines = [str(i).split(": ", 1)[1] for i in e.value.issues]
    assert "images.a.tags: must be a localhost/NAME:TAG image tag, got 'docker.io/x:1'" in lines
    assert "images.a.requires: must be a path inside containerfiles/, got '../etc/passwd'" in lines
    assert "images.a.args.lower: build arguments are UPPER_CASE names" in lines
    assert "images.a.bases: localhost/nope:1 is no image's tag in the index" in lines


def test_build_order_and_missing_inputs(tmp_path: Path) -> None:
    index = load_index()
    glm = index.find("localhost/sparkctl-vllm-glm-4.7-flash-awq:tf5")
    assert [i.name for i in index.build_order([glm])] == ["vllm-mxfp4", "vllm-tf5", "vllm-glm-4.7-flash-awq"]
    # Every sparkctl image builds from containerfiles/ and its defaults alone.
    assert {i.name: i.missing_inputs() for i in index.images.values() if i.missing_inputs()} == {}
    assert glm.build_args({"TRANSFORMERS_VERSION": "5.1.0", "UNRELATED": "x"}) == {
        "TRANSFORMERS_VERSION": "5.1.0"
    }
    assert index.find("vllm-tf5") is index.find("localhost/sparkctl-vllm-tf5:cu131")
    with pytest.raises(ImagesError, match="no image 'localhost/x:1'"):
        index.find("localhost/x:1")
    # An index of one's own may still ask the builder for files and arguments.
    (tmp_path / "a").mkdir()
    (tmp_path / "a/Containerfile").write_text("FROM scratch\nARG REF\nCOPY a/ /a/\n")
    (tmp_path / "index.toml").write_text(
        '[images.a]\ntags = ["localhost/a:1"]\ncontainerfile = "a/Containerfile"\ndescription = "d"\n'
        'requires = ["patches/x.patch"]\n[images.a.args.REF]\nhelp = "the commit to build"\n'
    )
    own = load_index(tmp_path / "index.toml").find("localhost/a:1")
    assert own.missing_inputs() == ["file containerfiles/patches/x.patch", "--build-arg REF=…"]
    assert own.missing_inputs({"REF": "abc"}) == ["file containerfiles/patches/x.patch"]


def test_the_inputs_digest_covers_what_the_build_copies(tmp_path: Path) -> None:
    """`images list` calls an image outdated when a fix or mod it copies has changed since."""
    (tmp_path / "a").mkdir()
    (tmp_path / "fixes").mkdir()
    (tmp_path / "fixes/one.py").write_text("EDITS = []\n")
    (tmp_path / "fixes/__pycache__").mkdir()
    (tmp_path / "fixes/__pycache__/one.pyc").write_bytes(b"\0")
    (tmp_path / "a/Containerfile").write_text(
        "FROM scratch AS b\nARG WORD=plain\nCOPY --from=b /x /x\nCOPY --chown=0:0 fixes/ \\\n  /opt/fixes/\n"
        'ADD ["a/Containerfile", "/c"]\n'
    )
    (tmp_path / "index.toml").write_text(
        '[images.a]\ntags = ["localhost/a:1"]\ncontainerfile = "a/Containerfile"\ndescription = "d"\n'
        '[images.a.args.WORD]\ndefault = "plain"\nhelp = "a word to bake in"\n'
    )
    image = load_index(tmp_path / "index.toml").find("localhost/a:1")
    assert [p.relative_to(tmp_path).as_posix() for p in copied_files(image.containerfile, tmp_path)] == [
        "a/Containerfile",
        "fixes/one.py",
    ]
    before = image.inputs_digest()
    (tmp_path / "fixes/__pycache__/one.pyc").write_bytes(b"\1")
    assert image.inputs_digest() == before
    (tmp_path / "fixes/one.py").write_text("EDITS = [1]\n")
    assert image.inputs_digest() != before
    assert image.inputs_digest({"WORD": "other"}) != image.inputs_digest()  # arguments count too


# ------------------------------------------------------------------------------------ the commands
def test_images_list_without_podman_says_states_are_unknown() -> None:
    result = CliRunner().invoke(
        cli, ["images", "list", "--json"], env={"CONTAINER_HOST": "unix:///nonexistent.sock"}
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["image"] for r in rows} == {i for i in model_images() if _enabled_users(i)}
    assert all(r["models"] == _enabled_users(r["image"]) for r in rows)
    assert all(r["state"] == "unknown" for r in rows)
    tf5 = next(r for r in rows if r["image"] == "localhost/sparkctl-vllm-tf5:latest")
    assert tf5["source"] == "build:vllm-tf5"
    assert tf5["note"] == "sparkctl images build localhost/sparkctl-vllm-tf5:latest"  # nothing to supply
    assert "note: states are unknown" in result.stderr


def _enabled_users(image: str) -> list[str]:
    specs, _ = read_specs([SHIPPED_CATALOG])
    return [m for m, (s, _) in specs.items() if s.engine.image == image and s.enabled]


def test_images_build_refuses_where_podman_cannot_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONTAINER_HOST", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    result = CliRunner().invoke(cli, ["images", "build", "localhost/sparkctl-vllm:latest"])
    assert result.exit_code == 1
    assert "error: Podman is not installed on this machine" in result.stderr
    assert "hint: sudo apt install podman" in result.stderr


# -------------------------------------------------------------------------- mods, run for real
def _site(tmp_path: Path, files: dict[str, str]) -> Path:
    site = tmp_path / "site-packages"
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    return site


def _run(argv: list[str], site: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(site), **env},
    )


def test_chat_template_installer(tmp_path: Path) -> None:
    script = CF / "mods/fix-qwen3.5-chat-template/run.sh"
    hub = tmp_path / "hub"
    repo = hub / "models--Qwen--Qwen3.5-0.8B"
    for commit, text in (("a" * 40, "old template"), ("b" * 40, "{{ messages }}")):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "chat_template.jinja").write_text(text)
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text("b" * 40)
    dest = tmp_path / "ws/unsloth.jinja"
    env = {
        "QWEN35_CHAT_TEMPLATE_MODEL_ID": "Qwen/Qwen3.5-0.8B",
        "QWEN35_CHAT_TEMPLATE_CACHE_ROOT": str(hub),
        "QWEN35_CHAT_TEMPLATE_DESTINATION": str(dest),
    }
    done = _run([str(script), "sh", "-c", "echo exec:$0 $1", "vllm", "serve"], tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "exec:vllm serve\n" and dest.read_text() == "{{ messages }}"  # the `main` snapshot

    missing = _run([str(script), "true"], tmp_path, **{**env, "QWEN35_CHAT_TEMPLATE_MODEL_ID": "Qwen/Absent"})
    assert (
        missing.returncode == 1
        and "no chat template found" in missing.stderr
        and "sparkctl pull" in missing.stderr
    )


QWEN3_NEXT_LEGACY = """class Qwen3NextSparseMoeBlock(nn.Module):
    def __init__(self, config, quant_config, prefix=""):
        self.gate = ReplicatedLinear(
            config.hidden_size,
            config.num_experts,
            bias=False,
            quant_config=None,
            prefix=f"{prefix}.gate",
        )
"""


def test_qwen3_next_autoround_gate_fix(tmp_path: Path) -> None:
    site = _site(
        tmp_path, {"vllm/__init__.py": "", "vllm/model_executor/models/qwen3_next.py": QWEN3_NEXT_LEGACY}
    )
    target = site / "vllm/model_executor/models/qwen3_next.py"
    wrapper = CF / "mods/fix-qwen3-next-autoround/run.sh"
    first = _run([str(wrapper), "echo", "started"], site)
    assert first.returncode == 0 and first.stdout == "started\n", first.stderr
    assert (
        "quant_config=quant_config," in target.read_text() and "quant_config=None" not in target.read_text()
    )
    again = _run([str(wrapper), "true"], site)
    assert "already quantises" in again.stderr
    target.write_text("class Other: pass\n")
    moved = _run([str(wrapper), "true"], site)
    assert moved.returncode == 0 and "warning: no MoE gate construction found" in moved.stderr


KV_MANAGER = """\
    def cache_blocks(self, request, num_tokens):
        if num_cached_blocks_after > num_cached_blocks_before:
            for block in self.req_to_blocks[request.request_id][
                num_cached_blocks_before:num_cached_blocks_after
            ]:
                assert block.block_hash is not None
"""
FUSED_MOE = "".join(
    f"def {name}(\n    a_ptr,\n    stride_am: tl.int64,\n    stride_ak: tl.int64,\n):\n    pass\n\n\n"
    for name in ("fused_moe_kernel_gptq_awq", "fused_moe_kernel")
)


def test_coder_next_fixes_apply_once_and_install_the_allocator(tmp_path: Path) -> None:
    kv = "vllm/v1/core/single_type_kv_cache_manager.py"
    moe = "vllm/model_executor/layers/fused_moe/fused_moe.py"
    site = _site(tmp_path, {"vllm/__init__.py": "", kv: KV_MANAGER, moe: FUSED_MOE})
    mods = tmp_path / "mods"
    subprocess.run(["cp", "-a", str(CF / "mods"), str(mods)], check=True)
    tools = {"SPARKCTL_IMAGE_TOOLS": str(CF)}  # in the image: /opt/sparkctl
    (mods / "fix-qwen3.5-chat-template/run.sh").unlink()  # not asked for: no template variables set
    first = _run([str(mods / "fix-qwen3.5-moe-runtime/run.sh"), "echo", "engine"], site, **tools)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "engine\n"
    assert "vllm-null-blocks: cache_blocks skips null blocks: applied" in first.stderr
    assert first.stderr.count("takes untyped strides: applied") == 2
    assert "if block.is_null:" in (site / kv).read_text()
    assert "tl.int64" not in (site / moe).read_text()
    assert (site / "sparkctl_triton_allocator.pth").is_file() and (
        site / "sparkctl_triton_allocator.py"
    ).is_file()
    again = _run([str(mods / "fix-qwen3-coder-next/run.sh"), "true"], site, **tools)
    assert again.returncode == 0 and again.stderr.count(": in effect") == 3, again.stderr
    (site / moe).write_text("unrelated\n")
    drifted = _run([str(mods / "fix-qwen3-coder-next/run.sh"), "true"], site, **tools)
    assert drifted.returncode == 0
    assert (
        "warning: vllm-moe-untyped-strides: fused_moe_kernel takes untyped strides: does not fit"
        in drifted.stderr
    )


def test_autoround_rope_fix_at_start(tmp_path: Path) -> None:
    rope = "transformers/modeling_rope_utils.py"
    union = 'keys = ignore_keys_at_rope_validation | {"partial_rotary_factor"}\n'
    site = _site(tmp_path, {"transformers/__init__.py": "", rope: union})
    tools = {"SPARKCTL_IMAGE_TOOLS": str(CF)}
    wrapper = str(CF / "mods/fix-qwen3.5-autoround/run.sh")
    first = _run([wrapper, "echo", "engine"], site, **tools)
    assert first.returncode == 0 and first.stdout == "engine\n", first.stderr
    assert (
        site / rope
    ).read_text() == 'keys = set(ignore_keys_at_rope_validation) | {"partial_rotary_factor"}\n'
    assert ": in effect" in _run([wrapper, "true"], site, **tools).stderr
    (site / rope).write_text("moved = True\n")
    drifted = _run([wrapper, "echo", "still starts"], site, **tools)
    assert drifted.returncode == 0 and drifted.stdout == "still starts\n" and "warning:" in drifted.stderr
    # a fix that cannot run at all does not keep the model from starting either
    broken = _run([wrapper, "echo", "starts anyway"], site, SPARKCTL_IMAGE_TOOLS=str(tmp_path / "nowhere"))
    assert broken.returncode == 0 and broken.stdout == "starts anyway\n"
    assert "warning: the rope fix could not run (exit 2)" in broken.stderr


def test_triton_allocator_patches_the_default_allocator(tmp_path: Path) -> None:
    site = _site(
        tmp_path,
        {
            "triton/__init__.py": "",
            "triton/runtime/__init__.py": "",
            "triton/runtime/_allocation.py": (
                "class NullAllocator:\n    def __call__(self, size, alignment, stream):\n"
                "        raise RuntimeError('Kernels requiring a global memory scratch buffer must set an allocator')\n"
            ),
        },
    )
    subprocess.run(
        [
            "cp",
            str(CF / "mods/fix-qwen3-coder-next/sparkctl_triton_allocator.py"),
            str(CF / "mods/fix-qwen3-coder-next/sparkctl_triton_allocator.pth"),
            str(site),
        ],
        check=True,
    )
    code = (
        "import site, sys; site.addsitedir(sys.argv[1]); "
        "from triton.runtime._allocation import NullAllocator; import sparkctl_triton_allocator as a; "
        "print(NullAllocator.__call__ is a._allocate)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, check=True)
    assert out.stdout == "True\n"


GUARD_SOURCES = {
    "vllm/__init__.py": "",
    "vllm/model_executor/layers/quantization/utils/w8a8_utils.py": (
        "def cutlass_fp8_supported(capability):\n    return ops.cutlass_scaled_mm_supports_fp8(capability)\n\n"
        "def cutlass_block_fp8_supported(capability):\n    return ops.cutlass_scaled_mm_supports_block_fp8(capability)\n\n"
        "def cutlass_group_gemm_supported(capability):\n    return ops.cutlass_group_gemm_supported(capability)\n"
    ),
    "vllm/compilation/passes/fusion/matcher_utils.py": (
        "if current_platform.is_cuda():\n"
        "    QUANT_OPS[kFp8Dynamic128Sym] = torch.ops._C.per_token_group_fp8_quant.default  # noqa: E501\n"
    ),
    "vllm/compilation/passes/fusion/rms_quant_fusion.py": (
        "if current_platform.is_cuda():\n"
        "    QUANT_OPS[kFp8Dynamic64Sym] = torch.ops._C.per_token_group_fp8_quant.default  # noqa: E501\n"
    ),
    "vllm/model_executor/layers/quantization/utils/fp8_utils.py": (
        "def f(x):\n    if current_platform.is_cuda() and x.is_contiguous():\n        return 1\n"
    ),
    "vllm/model_executor/layers/quantization/utils/int8_utils.py": (
        "def q(x):\n    # prefer CUDA kernel if available\n    if current_platform.is_cuda():\n"
        "        torch.ops._C.per_token_group_quant_int8(x)\n        return x\n    return triton_path(x)\n"
    ),
}


def test_guard_vllm_ops_guards_once_and_fails_loudly(tmp_path: Path) -> None:
    site = _site(tmp_path, GUARD_SOURCES)
    script = CF / "scripts/guard-vllm-ops.py"
    first = _run([sys.executable, str(script)], site)
    assert first.returncode == 0, first.stderr
    w8a8 = (site / "vllm/model_executor/layers/quantization/utils/w8a8_utils.py").read_text()
    assert w8a8.count("if not hasattr(torch.ops._C,") == 3
    assert (
        'is_cuda() and hasattr(torch.ops._C, "per_token_group_fp8_quant"):'
        in (site / "vllm/compilation/passes/fusion/matcher_utils.py").read_text()
    )
    assert (
        'if current_platform.is_cuda() and hasattr(torch.ops._C, "per_token_group_quant_int8"):'
        in (site / "vllm/model_executor/layers/quantization/utils/int8_utils.py").read_text()
    )
    for rel, original in GUARD_SOURCES.items():
        if original:
            compile((site / rel).read_text(), rel, "exec")  # still valid Python
    snapshot = {rel: (site / rel).read_text() for rel in GUARD_SOURCES}
    second = _run([sys.executable, str(script)], site)
    assert second.returncode == 0 and {rel: (site / rel).read_text() for rel in GUARD_SOURCES} == snapshot
    (site / "vllm/model_executor/layers/quantization/utils/fp8_utils.py").write_text("moved = True\n")
    third = _run([sys.executable, str(script)], site)
    assert (
        third.returncode == 1
        and "fp8_utils.py: no `if current_platform.is_cuda() and x.is_contiguous():`" in third.stderr
    )


def test_glm_guards(tmp_path: Path) -> None:
    site = _site(
        tmp_path,
        {
            "vllm/__init__.py": "",
            "vllm/model_executor/layers/attention/mla_attention.py": "dtype = self.kv_b_proj.weight.dtype\n",
            "vllm/_custom_ops.py": "".join(
                f"def {n}(cuda_device_capability: int) -> bool:\n    return torch.ops._C.{n}(cuda_device_capability)\n\n"
                for n in (
                    "cutlass_scaled_mm_supports_fp4",
                    "cutlass_scaled_mm_supports_fp8",
                    "cutlass_scaled_mm_supports_block_fp8",
                )
            ),
        },
    )
    script = CF / "mods/fix-glm-4.7-flash-AWQ/glm_guards.py"
    assert _run([sys.executable, str(script)], site).returncode == 0
    ops = (site / "vllm/_custom_ops.py").read_text()
    assert ops.count("except AttributeError:") == 3
    compile(ops, "_custom_ops.py", "exec")
    assert (
        'hasattr(self.kv_b_proj, "weight")'
        in (site / "vllm/model_executor/layers/attention/mla_attention.py").read_text()
    )
    assert _run([sys.executable, str(script)], site).returncode == 0
    assert (site / "vllm/_custom_ops.py").read_text() == ops


def test_nano_v3_parser_gives_the_answer_back_when_thinking_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin's own logic, over a stand-in for vLLM's DeepSeek-R1 parser (vLLM needs a GPU)."""
    registered: dict[str, type] = {}

    class Delta:
        def __init__(self, reasoning: str | None, content: str | None) -> None:
            self.reasoning, self.content = reasoning, content

    class DeepSeekR1ReasoningParser:
        def __init__(self, tokenizer: object, *args: object, **kwargs: object) -> None:
            self.tokenizer = tokenizer

        def extract_reasoning(self, model_output: str, request: object) -> tuple[str | None, str | None]:
            head, sep, tail = model_output.partition("</think>")
            return (head, tail) if sep else (model_output, None)

        def extract_reasoning_streaming(self, *args: object) -> Delta:
            return Delta(str(args[2]), None)

    class Manager:
        @staticmethod
        def register_module(name: str):  # type: ignore[no-untyped-def]
            return lambda cls: registered.setdefault(name, cls)

    reasoning = types.ModuleType("vllm.reasoning")
    reasoning.ReasoningParserManager = Manager  # type: ignore[attr-defined]
    r1 = types.ModuleType("vllm.reasoning.deepseek_r1_reasoning_parser")
    r1.DeepSeekR1ReasoningParser = DeepSeekR1ReasoningParser  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", types.ModuleType("vllm"))
    monkeypatch.setitem(sys.modules, "vllm.reasoning", reasoning)
    monkeypatch.setitem(sys.modules, "vllm.reasoning.deepseek_r1_reasoning_parser", r1)
    spec = importlib.util.spec_from_file_location("nano_v3", CF / "plugins/nano_v3_reasoning_parser.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    parser_cls = registered["nano_v3"]
    off = types.SimpleNamespace(chat_template_kwargs={"enable_thinking": False})
    on = types.SimpleNamespace(chat_template_kwargs=None)
    parser = parser_cls(tokenizer=None)
    assert parser.extract_reasoning("The answer is 4.", off) == (None, "The answer is 4.")
    assert parser.extract_reasoning("The answer is 4.", on) == ("The answer is 4.", None)
    assert parser.extract_reasoning("hmm</think>4", off) == ("hmm", "4")
    streaming_off = parser_cls(None, chat_template_kwargs={"enable_thinking": False})
    delta = streaming_off.extract_reasoning_streaming("", "", "4", [], [], [])
    assert (delta.reasoning, delta.content) == (None, "4")
    delta = parser.extract_reasoning_streaming("", "", "4", [], [], [])  # no switch known: as R1
    assert (delta.reasoning, delta.content) == ("4", None)


def test_glm_build_script_end_to_end(tmp_path: Path) -> None:
    """apply.sh as the GLM image's build runs it, with a stand-in `uv` that installs a
    transformers into the stand-in site-packages (with or without glm4_moe_lite)."""
    mla = "vllm/v1/attention/backends/mla/triton_mla.py"
    site = _site(
        tmp_path,
        {
            **GUARD_SOURCES,
            mla: "        num_kv_splits = 1 if envs.VLLM_BATCH_INVARIANT else 4\n",
            "vllm/model_executor/layers/attention/mla_attention.py": "dtype = self.kv_b_proj.weight.dtype\n",
            "vllm/_custom_ops.py": "".join(
                f"def {n}(c: int) -> bool:\n    return torch.ops._C.{n}(c)\n\n"
                for n in (
                    "cutlass_scaled_mm_supports_fp4",
                    "cutlass_scaled_mm_supports_fp8",
                    "cutlass_scaled_mm_supports_block_fp8",
                )
            ),
        },
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    uv = bin_dir / "uv"
    uv.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2 $3 $4" = "pip install --no-deps transformers==5.0.0" ] || { echo "uv: $*" >&2; exit 2; }\n'
        'mkdir -p "$SITE/transformers/models/auto"\n'
        'touch "$SITE/transformers/__init__.py" "$SITE/transformers/models/__init__.py" '
        '"$SITE/transformers/models/auto/__init__.py"\n'
        'echo "CONFIG_MAPPING_NAMES = {$MODEL_TYPES}" > "$SITE/transformers/models/auto/configuration_auto.py"\n'
    )
    uv.chmod(0o755)
    env = {
        "SPARKCTL_IMAGE_TOOLS": str(CF),
        "TRANSFORMERS_VERSION": "5.0.0",
        "SITE": str(site),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }
    script = str(CF / "mods/fix-glm-4.7-flash-AWQ/apply.sh")
    wrong = _run([script], site, **env, MODEL_TYPES="'glm4_moe': 'Glm4MoeConfig'")
    assert wrong.returncode != 0 and "this transformers has no glm4_moe_lite" in wrong.stderr
    ok = _run([script], site, **env, MODEL_TYPES="'glm4_moe_lite': 'Glm4MoeLiteConfig'")
    assert ok.returncode == 0, ok.stderr
    assert (
        "vllm-triton-mla-splits: the MLA decode splits the KV scan by sequence length: applied" in ok.stderr
    )
    assert "1 << (max(32, min(128, attn_metadata.max_seq_len // 1500))" in (site / mla).read_text()
    assert (
        'hasattr(self.kv_b_proj, "weight")'
        in (site / "vllm/model_executor/layers/attention/mla_attention.py").read_text()
    )
    # A vLLM whose MLA code moved stops the build: the image must not ship half-fixed.
    (site / mla).write_text("splits = choose()\n")
    moved = _run([script], site, **env, MODEL_TYPES="'glm4_moe_lite': 'Glm4MoeLiteConfig'")
    assert moved.returncode == 1 and "error: vllm-triton-mla-splits" in moved.stderr


def test_the_build_context_leaves_bytecode_out() -> None:
    import tarfile

    from podman import api

    (CF / "scripts/__pycache__").mkdir(exist_ok=True)  # as the tests that import srcfix leave it
    with (
        api.create_tar(anchor=str(CF), exclude=api.prepare_containerignore(str(CF))) as tar_file,
        tarfile.open(fileobj=tar_file) as tar,
    ):
        names = tar.getnames()
    assert "fixes/vllm-null-blocks.py" in names and "scripts/srcfix.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


@pytest.mark.parametrize(
    ("script", "requirements"),
    [
        ("use_existing_torch.py", "requirements/build.txt"),
        ("tools/use_existing_torch.py", "requirements/build/cuda.txt"),
    ],
)
def test_vllm_build_requirements_finds_either_layout(tmp_path: Path, script: str, requirements: str) -> None:
    """vLLM moved use_existing_torch.py to tools/ and requirements/build.txt to
    requirements/build/cuda.txt; the images build from a tree of either shape."""
    helper = str(CF / "scripts/vllm-build-requirements.sh")
    tree = tmp_path / "vllm"
    for rel, text in {
        script: "import pathlib\nprint('>>> stripped torch')\npathlib.Path('ran').write_text('yes')\n",
        requirements: "cmake\ntorch==2.10.0\n",
    }.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    result = subprocess.run([helper], cwd=tree, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{requirements}\n"  # only the path: the script's report went to stderr
    assert ">>> stripped torch" in result.stderr and (tree / "ran").read_text() == "yes"
    (tree / requirements).unlink()
    missing = subprocess.run([helper], cwd=tree, capture_output=True, text=True, check=False)
    assert missing.returncode == 1 and "error: no build requirements" in missing.stderr
    (tree / script).unlink()
    none = subprocess.run([helper], cwd=tree, capture_output=True, text=True, check=False)
    assert none.returncode == 1 and "error: no use_existing_torch.py" in none.stderr

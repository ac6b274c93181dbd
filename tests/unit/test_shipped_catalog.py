"""The shipped catalog (models/): it loads with the real loader and default settings, and it says
what the reference stack (dgx-spark-inference-stack 0.9.0) ran, with that stack's known defects
fixed rather than copied.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from sparkctl.catalog import Catalog, ModelSpec, Status, load_catalog
from sparkctl.settings import Settings
from sparkctl.units.render import render
from tests.helpers import to_toml

MODELS = Path(__file__).resolve().parents[2] / "models"

# The 34 models the reference stack routed (compose include + models.json), by API id.
ACTIVE = frozenset(
    {
        "gpt-oss-20b",
        "gpt-oss-120b",
        "huihui-gpt-oss-120b-mxfp4-abliterated",
        "gemma4-26b-a4b",
        "gemma4-31b",
        "huihui-gemma4-e2b-abliterated",
        "glm-4.5-air-fp4",
        "glm-4.5-air-derestricted-fp4",
        "glm-4.6v-flash-fp4",
        "glm-4-9b-chat",
        "glm-4.7-flash-awq",
        "llama-3.3-70b-instruct-fp4",
        "llama-3.3-70b-joyous-fp4",
        "eurollm-22b-instruct-fp4",
        "mistral-nemo-instruct-2407",
        "nemotron-3-nano-30b-nvfp4",
        "qwen3-vl-32b-instruct-fp4",
        "qwen3.5-0.8b",
        "qwen3.6-27b-fp8",
        "qwen3.6-27b-fp8-mtp",
        "qwen3.6-35b-a3b-fp8",
        "qwen3.6-35b-a3b-fp8-mtp",
        "huihui-qwen3.6-27b-abliterated",
        "qwen3.5-122b-a10b-int4-autoround",
        "huihui-qwen3.5-35b-a3b-abliterated",
        "jackrong-qwen3.5-35b-a3b-claude-4.6-opus-reasoning-distilled",
        "qwen3-coder-next-int4-autoround",
        "qwen2.5-1.5b-instruct",
        "qwen2.5-vl-7b",
        "qwen3-coder-30b-a3b-instruct",
        "qwen2.5-coder-7b-instruct",
        "qwen-math",
        "qwen3-vl-30b-instruct",
        "qwen3-vl-30b-thinking-instruct",
    }
)
# Defined in the reference's compose fragments but never included or routed.
INACTIVE = frozenset(
    {
        "deepseek-r1-distill-qwen-14b",
        "deepseek-r1-distill-qwen-32b",
        "deepseek-ocr",
        "qwen3-next-80b-a3b-instruct-fp4",
        "qwen3-next-80b-a3b-thinking-fp4",
        "phi-4-multimodal-instruct-fp4",
        "phi-4-reasoning-plus-fp4",
        "nemotron-3-nano-30b-fp8",
    }
)
# Beyond the reference (one Spark only): the example of a model that spans two Sparks (#15),
# from NVIDIA's two-Spark playbook.
SPANNING = frozenset({"llama-3.3-70b-instruct-tp2"})
# Active in the reference but recorded there as not working.
BROKEN = frozenset({"gemma4-31b"})
EXCLUSIVE = frozenset(
    {
        "gemma4-31b",
        "qwen3.5-122b-a10b-int4-autoround",
        "jackrong-qwen3.5-35b-a3b-claude-4.6-opus-reasoning-distilled",
        "qwen3-coder-next-int4-autoround",
    }
)
# The old validator's DEFAULT_NON_THINKING_MODELS.
NON_THINKING = frozenset(
    {
        "glm-4.7-flash-awq",
        "nemotron-3-nano-30b-nvfp4",
        "huihui-qwen3.5-35b-a3b-abliterated",
        "huihui-qwen3.6-27b-abliterated",
        "qwen3.5-122b-a10b-int4-autoround",
        "qwen3.6-27b-fp8",
        "qwen3.6-27b-fp8-mtp",
        "qwen3.6-35b-a3b-fp8",
        "qwen3.6-35b-a3b-fp8-mtp",
    }
)
# The old validator stripped tools for these (small-no-tools, vl, toolSupport none) — and also for
# qwen3-vl-32b-instruct-fp4, whose engine has hermes tool calling enabled; that one keeps tools now.
TOOLS_STRIPPED = frozenset(
    {
        "qwen-math",
        "qwen3.5-0.8b",
        "qwen2.5-1.5b-instruct",
        "qwen2.5-vl-7b",
        "qwen3-vl-30b-instruct",
        "qwen3-vl-30b-thinking-instruct",
        "jackrong-qwen3.5-35b-a3b-claude-4.6-opus-reasoning-distilled",
    }
)
TOOL_KEYS = ["tools", "tool_choice", "functions", "function_call", "parallel_tool_calls"]
DIGEST_RE = re.compile(r"^[a-z0-9.-]+\.[a-z]+/[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$")
AVAROK_DIGEST = "sha256:246723e9a74163e7828716c1587d6c5208a9cf0dc8d1195cbd33f68234b1024b"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(Settings(), [MODELS])


def spec(catalog: Catalog, model_id: str) -> ModelSpec:
    return catalog.models[model_id].spec


def test_every_file_loads(catalog: Catalog) -> None:
    files = sorted(p.stem for p in MODELS.glob("*.toml"))
    assert len(files) == 43
    assert sorted(catalog.models) == files


def test_the_reference_ids_and_no_others(catalog: Catalog) -> None:
    assert len(ACTIVE) == 34 and len(INACTIVE) == 8
    assert set(catalog.models) == ACTIVE | INACTIVE | SPANNING
    assert {m.id for m in catalog.enabled} == ACTIVE - BROKEN


@pytest.mark.parametrize("model_id", sorted(INACTIVE | BROKEN))
def test_inactive_and_broken_models_are_disabled_with_a_reason(catalog: Catalog, model_id: str) -> None:
    s = spec(catalog, model_id)
    assert s.status is Status.DISABLED
    assert s.disabled_reason


def test_gemma4_31b_is_disabled_because_it_hangs(catalog: Catalog) -> None:
    s = spec(catalog, "gemma4-31b")
    assert s.status is Status.DISABLED
    assert s.disabled_reason is not None and "hangs" in s.disabled_reason


def test_validated_models_are_the_reference_ones(catalog: Catalog) -> None:
    validated = {m.id for m in catalog if m.spec.status is Status.VALIDATED}
    assert validated == {"gpt-oss-20b", "gpt-oss-120b", "glm-4.7-flash-awq", "qwen3.5-0.8b"}


def test_the_utility_is_pinned_shared_preloaded_at_five_percent(catalog: Catalog) -> None:
    s = spec(catalog, "qwen3.5-0.8b")
    assert s.serve.pinned and s.serve.preload and s.serve.gpu == "shared"
    assert s.engine.gpu_memory_utilization == 0.05
    assert s.engine.kind == "sglang"
    assert s.engine.image is not None and s.engine.image.startswith("docker.io/scitrera/dgx-spark-sglang:")
    assert catalog.models["qwen3.5-0.8b"].idle_timeout == float("inf")
    assert [m.id for m in catalog.enabled if m.spec.serve.pinned or m.spec.serve.preload] == ["qwen3.5-0.8b"]


def test_exclusive_models(catalog: Catalog) -> None:
    assert {m.id for m in catalog if m.spec.serve.gpu == "exclusive"} == EXCLUSIVE | SPANNING


def test_gpt_oss_120b(catalog: Catalog) -> None:
    e = spec(catalog, "gpt-oss-120b").engine
    assert e.gpu_memory_utilization == 0.80
    assert e.image == "localhost/sparkctl-vllm-mxfp4:latest"
    assert e.reasoning_parser == "openai_gptoss" and e.tool_call_parser == "openai"
    assert e.devices == ["/dev/infiniband"]
    assert "--mxfp4-layers" in e.args
    assert spec(catalog, "gpt-oss-120b").context_limit == 108000
    assert spec(catalog, "gpt-oss-20b").serve.start_timeout == 15 * 60
    assert spec(catalog, "huihui-gpt-oss-120b-mxfp4-abliterated").serve.start_timeout == 90 * 60


def test_external_images_keep_the_reference_pins(catalog: Catalog) -> None:
    avarok = spec(catalog, "glm-4.5-air-fp4").engine
    assert avarok.image == f"docker.io/avarok/vllm-dgx-spark:v11@{AVAROK_DIGEST}"
    assert avarok.command == ["serve"]  # the image's ENTRYPOINT is `vllm`
    ngc = spec(catalog, "glm-4-9b-chat").engine
    assert ngc.image is not None and ngc.image.endswith(
        "@sha256:9063047cace3b0ec2db8f02727c5e5e4d582a7fd9375cbc5a086fef243ad4074"
    )
    assert ngc.command == ["vllm", "serve"]


def test_qwen3_coder_next(catalog: Catalog) -> None:
    s = spec(catalog, "qwen3-coder-next-int4-autoround")
    assert s.engine.max_model_len == 1048576
    assert s.context_limit == 524000
    assert s.engine.json_args == {
        "hf-overrides": {
            "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 262144}
        }
    }
    assert s.engine.entrypoint == ["/workspace/mods/fix-qwen3-next-autoround/run.sh"]
    assert s.request.text_only
    # tool_choice=required crashes xgrammar on GB10 for Qwen3-Next: never forced here.
    assert s.request.force_tool_choice is None
    assert "xgrammar" in s.notes


def test_force_tool_choice_only_on_the_small_coders(catalog: Catalog) -> None:
    forced = {m.id for m in catalog if m.spec.request.force_tool_choice == "required"}
    assert forced == {"qwen3-coder-30b-a3b-instruct", "qwen2.5-coder-7b-instruct"}


def test_qwen36_mtp_speculative_config(catalog: Catalog) -> None:
    for model_id in ("qwen3.6-35b-a3b-fp8-mtp", "qwen3.6-27b-fp8-mtp"):
        e = spec(catalog, model_id).engine
        assert e.json_args == {"speculative-config": {"method": "mtp", "num_speculative_tokens": 2}}
    assert spec(catalog, "qwen3.6-35b-a3b-fp8").engine.json_args == {}
    e = spec(catalog, "qwen3.6-35b-a3b-fp8-mtp").engine
    assert e.gpu_memory_utilization == 0.84
    assert e.entrypoint == ["/workspace/mods/fix-qwen3.5-moe-runtime/run.sh"]
    assert e.args[:2] == ["--chat-template", "/workspace/unsloth.jinja"]
    assert e.chat_template is None  # an in-image file written by the wrapper, not a shipped one
    assert spec(catalog, "qwen3.6-35b-a3b-fp8-mtp").context_limit == 240000


def test_qwen3_vl_30b_pair_runs_at_the_context_it_really_started_with(catalog: Catalog) -> None:
    for model_id in ("qwen3-vl-30b-instruct", "qwen3-vl-30b-thinking-instruct"):
        s = spec(catalog, model_id)
        assert s.engine.max_model_len == 32768
        assert s.advertised_context == 32768
        assert "32768" in s.notes and "65536" in s.notes
        assert s.request.strip == TOOL_KEYS
    thinking = spec(catalog, "qwen3-vl-30b-thinking-instruct")
    assert thinking.engine.quantization is None  # not modelopt_fp4 on an AWQ checkpoint
    assert "modelopt_fp4" in thinking.notes


def test_qwen35_122b_fixed_max_model_len(catalog: Catalog) -> None:
    s = spec(catalog, "qwen3.5-122b-a10b-int4-autoround")
    assert s.engine.max_model_len == 262144
    assert "auto" in s.notes


def test_qwen3_vl_32b_keeps_its_tools(catalog: Catalog) -> None:
    s = spec(catalog, "qwen3-vl-32b-instruct-fp4")
    assert s.request.strip == []
    assert "tools" in s.capabilities and "vision" in s.capabilities
    assert s.engine.tool_call_parser == "hermes" and s.engine.enable_auto_tool_choice
    assert s.engine.tensor_parallel_size == 1
    assert not any("tensor" in a for a in s.engine.args)


def test_non_thinking_defaults(catalog: Catalog) -> None:
    defaulted = {m.id for m in catalog if m.spec.request.thinking_default is False}
    assert defaulted == NON_THINKING
    # A default, never an override: the client can still turn thinking on.
    assert all(not m.spec.request.overrides for m in catalog)
    assert not spec(catalog, "glm-4.7-flash-awq").request.defaults


def test_tool_stripping(catalog: Catalog) -> None:
    stripped = {m.id for m in catalog if m.spec.request.strip}
    assert stripped == TOOLS_STRIPPED
    for model_id in TOOLS_STRIPPED:
        s = spec(catalog, model_id)
        assert s.request.strip == TOOL_KEYS
        assert "tools" not in s.capabilities


def test_text_only_where_the_reference_flattened_content(catalog: Catalog) -> None:
    flattened = {m.id for m in catalog if m.spec.request.text_only}
    assert flattened == {
        "qwen3-coder-next-int4-autoround",
        "jackrong-qwen3.5-35b-a3b-claude-4.6-opus-reasoning-distilled",
    }
    assert all("vision" not in spec(catalog, i).capabilities for i in flattened)


def test_capabilities_follow_the_engine(catalog: Catalog) -> None:
    for m in catalog:
        s = m.spec
        assert s.capabilities[0] == "chat"
        assert "embeddings" not in s.capabilities
        assert ("reasoning" in s.capabilities) == (s.engine.reasoning_parser is not None), m.id
        if "tools" in s.capabilities:
            assert s.engine.tool_call_parser is not None and not s.request.strip, m.id
        if s.engine.tool_call_parser is not None and s.engine.kind == "vllm":
            assert s.engine.enable_auto_tool_choice, m.id
    assert {m.id for m in catalog if "code" in m.spec.capabilities} == {
        "qwen3-coder-30b-a3b-instruct",
        "qwen2.5-coder-7b-instruct",
        "qwen3-coder-next-int4-autoround",
    }


def test_opencode_ceilings(catalog: Catalog) -> None:
    ceilings = {
        "gpt-oss-20b": 108000,
        "gemma4-26b-a4b": 240000,
        "qwen3.6-27b-fp8": 240000,
        "qwen3.6-27b-fp8-mtp": 240000,
        "qwen3.6-35b-a3b-fp8": 240000,
        "qwen3-coder-next-int4-autoround": 524000,
        "huihui-qwen3.5-35b-a3b-abliterated": 200000,
        "huihui-gemma4-e2b-abliterated": 120000,
        "nemotron-3-nano-30b-nvfp4": 110000,
        "glm-4.7-flash-awq": 108000,
        "qwen3.5-0.8b": 8192,
    }
    for model_id, limit in ceilings.items():
        assert spec(catalog, model_id).context_limit == limit, model_id


def test_devices_volumes_and_shm(catalog: Catalog) -> None:
    with_devices = {m.id for m in catalog if m.spec.engine.devices}
    assert with_devices == {"gpt-oss-20b", "gpt-oss-120b", "huihui-gpt-oss-120b-mxfp4-abliterated"}
    media = {m.id for m in catalog if m.spec.engine.volumes}
    assert media == {"qwen2.5-vl-7b", "deepseek-ocr"}
    for model_id in media:
        (vol,) = spec(catalog, model_id).engine.volumes
        assert (vol.source, vol.target, vol.read_only) == ("/var/lib/sparkctl/media", "/media", True)
    assert spec(catalog, "qwen-math").engine.shm_size == 4 * 1024**3
    assert {m.id for m in catalog if m.spec.engine.shm_size != 16 * 1024**3} == {"qwen-math"}


def test_no_env_the_renderer_or_gateway_owns(catalog: Catalog) -> None:
    owned = {
        "HF_HOME",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "VLLM_API_KEY",
        "VLLM_NO_USAGE_STATS",
        "VLLM_CONFIGURE_LOGGING",
        "MAX_JOBS",
        "FLASHINFER_NVCC_THREADS",
    }
    for m in catalog:
        assert not owned & set(m.spec.engine.env), m.id
    offline = {m.id for m in catalog if m.spec.engine.env.get("HF_HUB_OFFLINE") == "1"}
    assert offline == {
        "huihui-qwen3.5-35b-a3b-abliterated",
        "jackrong-qwen3.5-35b-a3b-claude-4.6-opus-reasoning-distilled",
    }


def test_every_image_is_digest_pinned_or_local(catalog: Catalog) -> None:
    for m in catalog:
        image = m.spec.engine.image
        assert image is not None, m.id
        assert image.startswith("localhost/") or DIGEST_RE.match(image), f"{m.id}: {image}"


def test_wrapped_entrypoints_note_the_baked_mods(catalog: Catalog) -> None:
    for m in catalog:
        e = m.spec.engine
        if e.entrypoint and e.entrypoint[0].startswith("/workspace/mods/"):
            assert e.image is not None and e.image.startswith("localhost/"), m.id
            assert e.command == ["vllm", "serve"], m.id
            assert "bakes" in m.spec.notes, m.id


def test_ports_are_unique_among_enabled_models(catalog: Catalog) -> None:
    enabled = catalog.enabled
    host = [m.host_port for m in enabled]
    direct = [m.direct_port for m in enabled]
    assert all(host) and all(direct)
    assert len(set(host)) == len(host)
    assert len(set(direct)) == len(direct)
    assert not set(host) & set(direct)


def test_descriptions_are_one_line_and_notes_give_provenance(catalog: Catalog) -> None:
    for m in catalog:
        assert "\n" not in m.spec.description and len(m.spec.description) <= 200
        assert "0.9.0" in m.spec.notes, m.id
        if m.id in SPANNING:
            assert "NVIDIA/dgx-spark-playbooks" in m.spec.notes, m.id


@pytest.mark.parametrize(
    ("extra_args", "flag"),
    [
        (["--max-num-batched-tokens", "4096"], "--max-num-batched-tokens"),  # a typed field
        (["--tool_call_parser=hermes"], "--tool-call-parser"),  # either spelling
        (["--max-model-len", "4096"], "--max-model-len"),  # sparkctl's own
        (["--speculative-config", "{}"], "--speculative-config"),  # json_args
    ],
)
def test_a_flag_owned_by_a_typed_field_is_refused(extra_args: list[str], flag: str) -> None:
    data = tomllib.loads((MODELS / "qwen3.6-35b-a3b-fp8-mtp.toml").read_text())
    ModelSpec.model_validate(data)  # the shipped entry itself is fine
    data["engine"]["args"] = [*data["engine"]["args"], *extra_args]
    with pytest.raises(ValidationError, match=re.escape(flag)):
        ModelSpec.model_validate(data)


def test_the_spanning_example_is_the_two_spark_playbook(catalog: Catalog, tmp_path: Path) -> None:
    """Disabled (it needs a configured cluster and an owner), so it renders nothing in quadlets/; once an
    operator names its owner and enables it on two Sparks, its head runs the playbook's command."""
    (model,) = [catalog.models[i] for i in SPANNING]
    assert not model.spec.enabled and model.spec.disabled_reason
    serve = model.spec.serve
    assert (serve.nodes, serve.multinode, serve.gpu, serve.owner) == (2, "ray", "exclusive", None)
    data = tomllib.loads(model.file.read_text())
    data["status"] = "experimental"
    del data["disabled_reason"]
    data["serve"]["owner"] = "spark-a"
    (tmp_path / model.file.name).write_text(to_toml(data))
    settings = Settings.model_validate(
        {
            "cluster": {
                "node": "spark-a",
                "interface": "enp1s0f1np1",
                "address": "192.168.100.1",
                "peers": [{"name": "spark-b", "url": "http://192.168.100.2:8009", "api_key_file": "/k"}],
            }
        }
    )
    files = {f.name: f.text for f in render(load_catalog(settings, [tmp_path]), settings)}
    (exec_line,) = [
        ln for ln in files[f"sparkctl-{model.id}.container"].splitlines() if ln.startswith("Exec=")
    ]
    argv = exec_line.removeprefix("Exec=").split()
    assert argv[:3] == ["vllm", "serve", "meta-llama/Llama-3.3-70B-Instruct"]
    assert argv[argv.index("--max-model-len") + 1] == "2048"
    assert argv[-4:] == ["--tensor-parallel-size", "2", "--distributed-executor-backend", "ray"]

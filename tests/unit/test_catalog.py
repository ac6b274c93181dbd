"""The catalog loader: every deliberately broken file gives one precise `file: field: message`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sparkctl.catalog import load_catalog
from sparkctl.errors import CatalogError, UnknownModelError
from sparkctl.settings import Settings
from tests.helpers import write_model

S = Settings()


def errors(tmp_path: Path, settings: Settings = S) -> list[str]:
    with pytest.raises(CatalogError) as exc:
        load_catalog(settings, [tmp_path])
    return [str(i) for i in exc.value.issues]


def one_error(tmp_path: Path, **over: object) -> str:
    write_model(tmp_path, "m", **over)
    found = errors(tmp_path)
    assert len(found) == 1, found
    return found[0]


BROKEN = [
    # (overrides, expected "field: message" after the file name)
    (
        {"description": "ends in a backslash\\"},
        "description: must not end with a backslash (it would continue the unit file's line)",
    ),
    (
        {"engine": {"gpu_memory_utilization": 1.4}},
        "engine.gpu_memory_utilization: must be in (0, 1], got 1.4",
    ),
    ({"engine": {"gpu_memory_utilization": 0}}, "engine.gpu_memory_utilization: must be in (0, 1], got 0"),
    (
        {"status": "experimentl"},
        "status: must be one of validated, experimental, disabled, got 'experimentl'",
    ),
    ({"serve": {"gpu": "exclusiv"}}, "serve.gpu: must be one of exclusive, shared, got 'exclusiv'"),
    ({"engine": {"kind": "tgi"}}, "engine.kind: must be one of vllm, sglang, openai, got 'tgi'"),
    (
        {"capabilities": ["chat", "telepathy"]},
        "capabilities[1]: must be one of chat, tools, reasoning, vision, embeddings, code, audio, got 'telepathy'",
    ),
    ({"engine": {"max_model_len": "4096"}}, "engine.max_model_len: must be an integer, got '4096'"),
    ({"engine": {"max_model_len": 0}}, "engine.max_model_len: must be > 0, got 0"),
    (
        {"serve": {"start_timeout": "30 minutes"}},
        'serve.start_timeout: must be a duration like "30s", "20m", "500ms" or "1h", got \'30 minutes\'',
    ),
    ({"serve": {"stop_timeout": "500ms"}}, "serve.stop_timeout: must be at least 1s"),
    (
        {"serve": {"idle_timeout": "soon"}},
        'serve.idle_timeout: must be "0", "never" or a duration like "20m", got \'soon\'',
    ),
    (
        {"engine": {"shm_size": "16 GB"}},
        'engine.shm_size: must be a size like "16g", "512m" or "64k", got \'16 GB\'',
    ),
    ({"status": "disabled"}, 'disabled_reason: required when status is "disabled"'),
    ({"disabled_reason": "why"}, 'disabled_reason: only for status "disabled"'),
    (
        {"serve": {"gpu": "exclusive", "pinned": True}},
        "serve.pinned: an exclusive model shares the GPU with nobody, so it cannot stay pinned beside others; "
        'use gpu = "shared" or pinned = false',
    ),
    (
        {"engine": {"args": ["--max-model-len", "8192"]}},
        "engine.args[0]: --max-model-len: sparkctl sets it (from engine.max_model_len); remove it from args",
    ),
    (
        {"engine": {"kv_cache_dtype": "fp8", "args": ["--kv_cache_dtype=auto"]}},
        "engine.args[0]: --kv-cache-dtype: engine.kv_cache_dtype sets it; remove it from args",
    ),
    (
        {"engine": {"tensor_parallel_size": 2, "args": ["-tp", "2"]}},
        "engine.args[0]: -tp: engine.tensor_parallel_size sets it; remove it from args",
    ),
    (
        {"engine": {"json_args": {"hf-overrides": {"a": 1}}, "args": ["--hf-overrides", "{}"]}},
        "engine.args[0]: --hf-overrides: engine.json_args.hf-overrides sets it; remove it from args",
    ),
    (
        {"engine": {"args": ["--served-model-name", "other"]}},
        "engine.args[0]: --served-model-name: sparkctl sets it (from the id); remove it from args",
    ),
    (
        {"engine": {"bogus": 1}},
        "engine.bogus: unknown key (allowed: args, attention_backend, capabilities, chat_template, command, "
        "devices, dtype, enable_auto_tool_choice, enable_prefix_caching, enforce_eager, entrypoint, env, "
        "gpu_memory_utilization, health_path, host_port, image, json_args, kind, kv_cache_dtype, load_format, "
        "max_model_len, max_num_batched_tokens, max_num_seqs, pipeline_parallel_size, port, quantization, "
        "reasoning_parser, runtime, "
        "shm_size, tensor_parallel_size, tool_call_parser, trust_remote_code, ulimits, volumes)",
    ),
    (
        {"source": {"hf_repo": "not a repo"}},
        "source.hf_repo: must be a Hugging Face repo id (\"org/name\") or an absolute path, got 'not a repo'",
    ),
    ({"engine": {"image": None}}, 'engine.image: required when runtime is "container"'),
    ({"engine": {"runtime": "process"}}, 'engine.image: only for runtime "container"'),
    (
        {"engine": {"runtime": "process", "image": None, "entrypoint": ["/x"]}},
        'engine.entrypoint: only for runtime "container"',
    ),
    (
        {"engine": {"runtime": "process", "image": None, "kind": "openai"}},
        'engine.command: required for kind "openai" with runtime "process"',
    ),
    (
        {"engine": {"kind": "openai", "quantization": "fp8"}},
        'engine.quantization: kind "openai" renders no flags; put it in args',
    ),
    (
        {"engine": {"kind": "sglang", "enable_auto_tool_choice": True}},
        'engine.enable_auto_tool_choice: not supported by kind "sglang"; put it in args',
    ),
    (
        {"engine": {"enable_auto_tool_choice": True}},
        "engine.enable_auto_tool_choice: needs tool_call_parser (vLLM refuses to start)",
    ),
    ({"engine": {"env": {"BAD-NAME": "x"}}}, "engine.env.BAD-NAME: not a valid environment variable name"),
    (
        {"engine": {"env": {"X": "line\nbreak"}}},
        "engine.env.X: must not contain control characters (newline, tab, …), got 'line\\nbreak'",
    ),
    (
        {"engine": {"args": ["a\nb"]}},
        "engine.args[0]: must not contain control characters (newline, tab, …), got 'a\\nb'",
    ),
    (
        {"engine": {"args": [";"]}},
        "engine.args[0]: a lone ';' cannot be passed through Quadlet (it separates commands)",
    ),
    (
        {"engine": {"args": [""]}},
        "engine.args[0]: must not be empty (an empty word cannot be passed through Quadlet)",
    ),
    (
        {"engine": {"volumes": [{"source": "/srv/a b", "target": "/x"}]}},
        "engine.volumes[0].source: must be an absolute path of letters, digits and ._/+@=- (no '..', ':', ',' or "
        "spaces), got '/srv/a b'",
    ),
    (
        {"engine": {"volumes": [{"source": "/srv/../etc", "target": "/x"}]}},
        "engine.volumes[0].source: must be an absolute path of letters, digits and ._/+@=- (no '..', ':', ',' or "
        "spaces), got '/srv/../etc'",
    ),
    (
        {"engine": {"devices": ["/dev/../etc/shadow"]}},
        "engine.devices[0]: must be a host device like /dev/infiniband, got '/dev/../etc/shadow'",
    ),
    (
        {"engine": {"ulimits": {"memlok": -1}}},
        "engine.ulimits.memlok: unknown limit (allowed: core, cpu, data, fsize, locks, memlock, msgqueue, nice, "
        "nofile, nproc, rss, rtprio, rttime, sigpending, stack)",
    ),
    (
        {"engine": {"chat_template": "../../etc/passwd"}},
        "engine.chat_template: must be a file name relative to the catalog directory (no '..'), "
        "got '../../etc/passwd'",
    ),
    ({"engine": {"chat_template": "missing.jinja"}}, "engine.chat_template: no such file beside the catalog"),
    (
        {"engine": {"quantization": "fp8 --evil"}},
        "engine.quantization: must be a plain token (letters, digits, ._:/+-), got 'fp8 --evil'",
    ),
    (
        {"engine": {"image": "localhost/x:latest; rm -rf /"}},
        "engine.image: must be an image reference like localhost/sparkctl-vllm:latest, got 'localhost/x:latest; "
        "rm -rf /'",
    ),
    ({"context_limit": 9000}, "context_limit: must be at most engine.max_model_len (4096), got 9000"),
    ({"aliases": ["m"]}, "aliases: the id itself is not an alias"),
    ({"aliases": ["has space"]}, "aliases[0]: must be a model name matching"),
    ({"request": {"overrides": {"model": "x"}}}, "request.overrides.model: the model name cannot be shaped"),
    (
        {"request": {"force_tool_choice": "auto"}},
        "request.force_tool_choice: must be one of required, got 'auto'",
    ),
    ({"serve": {"direct_port": 70000}}, "serve.direct_port: must be < 65536, got 70000"),
    ({"engine": {"health_path": "health"}}, "engine.health_path: must be an absolute URL path, got 'health'"),
    (
        {"description": "line one\nline two"},
        "description: must not contain control characters (newline, tab, …), got 'line one\\nline two'",
    ),
]


@pytest.mark.parametrize(("over", "expected"), BROKEN)
def test_broken_file_gives_one_precise_error(tmp_path: Path, over: dict[str, object], expected: str) -> None:
    error = one_error(tmp_path, **over)
    assert error.startswith(f"{tmp_path / 'm.toml'}: {expected}"), error


@pytest.mark.parametrize(
    ("model_id", "message"),
    [
        ("Upper", "id: must match"),
        ("-lead", "id: must match"),
        ("a" * 65, "id: must match"),
        ("x-proxy", "id: must not end in '-proxy' (reserved)"),
        ("models", "id: 'models' is reserved"),
        ("gateway", "id: 'gateway' is reserved (it names the daemon's own socket)"),
        ("a/b", "id: must match"),
        ("a b", "id: must match"),
    ],
)
def test_bad_ids(tmp_path: Path, model_id: str, message: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(
        f'id = "{model_id}"\ndescription = "d"\nstatus = "validated"\n'
        '[source]\nhf_repo = "o/r"\n[engine]\nimage = "i:1"\nmax_model_len = 1\n'
        "gpu_memory_utilization = 0.1\n"
    )
    found = errors(tmp_path)
    assert len(found) == 1 and found[0].startswith(f"{path}: {message}"), found


def test_missing_required_keys_listed_each(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('id = "m"\n')
    assert errors(tmp_path) == [
        f"{path}: description: required",
        f"{path}: status: required",
        f"{path}: source: required",
        f"{path}: engine: required",
    ]


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text('id = "m"\ndescription = \n')
    (found,) = errors(tmp_path)
    assert found.startswith(f"{path}: not valid TOML:") and "line 2" in found


def test_file_stem_must_equal_id(tmp_path: Path) -> None:
    write_model(tmp_path, "m")
    (tmp_path / "m.toml").rename(tmp_path / "other.toml")
    assert errors(tmp_path) == [f"{tmp_path / 'other.toml'}: id: must equal the file name ('other'), got 'm'"]


def test_duplicate_and_shadowing_aliases(tmp_path: Path) -> None:
    write_model(tmp_path, "a", aliases=["shared"])
    write_model(tmp_path, "b", aliases=["shared", "a"])
    assert errors(tmp_path) == [
        f"{tmp_path / 'b.toml'}: aliases[0]: 'shared' is also an alias of 'a' ({tmp_path / 'a.toml'})",
        f"{tmp_path / 'b.toml'}: aliases[1]: 'a' is the id of another model ({tmp_path / 'a.toml'})",
    ]


def test_explicit_port_clashes(tmp_path: Path) -> None:
    write_model(tmp_path, "a", engine={"host_port": 18500}, serve={"direct_port": 18600})
    write_model(tmp_path, "b", engine={"host_port": 18600})
    write_model(tmp_path, "c", serve={"direct_port": 8009})
    found = errors(tmp_path)
    assert found == [
        f"{tmp_path / 'b.toml'}: engine.host_port: port 18600 is also used by a (serve.direct_port)",
        f"{tmp_path / 'c.toml'}: serve.direct_port: port 8009 is also used by gateway.listen (127.0.0.1:8009)",
    ]


def test_process_models_default_to_their_engine_port_and_clash(tmp_path: Path) -> None:
    write_model(tmp_path, "a", engine={"runtime": "process", "image": None})
    write_model(tmp_path, "b", engine={"runtime": "process", "image": None})
    assert errors(tmp_path) == [
        f"{tmp_path / 'b.toml'}: engine.port: port 8000 is also used by a (engine.port)"
    ]


def test_budget(tmp_path: Path) -> None:
    write_model(tmp_path, "big", engine={"gpu_memory_utilization": 0.95})
    write_model(tmp_path, "p1", engine={"gpu_memory_utilization": 0.5}, serve={"pinned": True})
    write_model(tmp_path, "p2", engine={"gpu_memory_utilization": 0.5}, serve={"pinned": True})
    found = errors(tmp_path)
    assert found[0] == (
        f"{tmp_path / 'big.toml'}: engine.gpu_memory_utilization: 0.95 can never fit the memory "
        "budget (scheduler.memory_budget = 0.94)"
    )
    assert found[1].startswith(f"{tmp_path / 'p1.toml'}: serve.pinned: the pinned models together need 1.00")
    assert found[2].startswith(f"{tmp_path / 'p2.toml'}: serve.pinned:")


def test_disabled_models_skip_budget_and_ports(tmp_path: Path) -> None:
    write_model(
        tmp_path,
        "big",
        status="disabled",
        disabled_reason="too big",
        engine={"gpu_memory_utilization": 0.99, "host_port": 8009},
    )
    catalog = load_catalog(S, [tmp_path])
    assert catalog.enabled == [] and catalog.models["big"].direct_port is None


def test_every_error_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    write_model(tmp_path, "a", engine={"gpu_memory_utilization": 2})
    write_model(tmp_path, "b", status="nope")
    write_model(tmp_path, "c")
    assert len(errors(tmp_path)) == 2


def test_later_directories_override_earlier_ones_by_id(tmp_path: Path) -> None:
    shipped, local = tmp_path / "shipped", tmp_path / "etc"
    write_model(shipped, "a", description="shipped a")
    write_model(shipped, "b")
    write_model(local, "a", description="operator's a")
    catalog = load_catalog(S, [shipped, local])
    assert catalog.models["a"].spec.description == "operator's a"
    assert catalog.models["a"].file == local / "a.toml"
    assert set(catalog.models) == {"a", "b"}


def test_missing_optional_dir_is_fine_but_explicit_one_is_not(tmp_path: Path) -> None:
    write_model(tmp_path / "shipped", "a")
    settings = Settings.model_validate(
        {"catalog": {"dirs": [str(tmp_path / "shipped"), str(tmp_path / "nope")]}}
    )
    assert list(load_catalog(settings).models) == ["a"]
    with pytest.raises(CatalogError) as exc:
        load_catalog(settings, [tmp_path / "nope"])
    assert str(exc.value.issues[0]) == f"{tmp_path / 'nope'}: not a directory"


def test_defaults_and_resolution(tmp_path: Path) -> None:
    write_model(tmp_path, "a", aliases=["alpha", "A:latest"])
    write_model(tmp_path, "b", serve={"idle_timeout": "never"})
    write_model(tmp_path, "c", serve={"idle_timeout": "0"})
    catalog = load_catalog(S, [tmp_path])
    a = catalog.resolve("alpha")
    assert a is catalog.resolve("A:latest") is catalog.resolve("a")
    assert a.spec.capabilities == ["chat"] and a.spec.advertised_context == 4096
    assert a.idle_timeout == 20 * 60
    assert catalog.models["b"].idle_timeout == math.inf
    assert catalog.models["c"].idle_timeout == 0
    assert a.spec.engine.shm_size == 16 * 1024**3 and a.spec.engine.ulimits == {
        "memlock": -1,
        "stack": 67108864,
    }
    assert a.spec.serve.start_timeout == 1800
    with pytest.raises(UnknownModelError):
        catalog.resolve("nope")


def test_automatic_ports_are_stable_when_models_come_and_go(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d"):
        write_model(tmp_path, name)
    before = load_catalog(S, [tmp_path]).models
    write_model(tmp_path, "zz-new")
    (tmp_path / "b.toml").unlink()
    after = load_catalog(S, [tmp_path]).models
    for name in ("a", "c", "d"):
        assert after[name].host_port == before[name].host_port
        assert after[name].direct_port == before[name].direct_port
    ports = [p for m in after.values() for p in (m.host_port, m.direct_port)]
    assert len(ports) == len(set(ports))
    assert all(18100 <= m.host_port < 18300 and 18300 <= (m.direct_port or 0) < 18500 for m in after.values())


def test_direct_port_zero_means_no_socket(tmp_path: Path) -> None:
    write_model(tmp_path, "a", serve={"direct_port": 0})
    assert load_catalog(S, [tmp_path]).models["a"].direct_port is None


@pytest.mark.parametrize("field", ["id", "alias", "env", "quantization"])
def test_a_trailing_newline_never_slips_through_a_pattern(tmp_path: Path, field: str) -> None:
    # Python's `$` matches before a final newline: every pattern must match the whole string.
    cases: dict[str, dict[str, object]] = {
        "alias": {"aliases": ["ok\n"]},
        "env": {"engine": {"env": {"OK\n": "v"}}},
        "quantization": {"engine": {"quantization": "fp8\n"}},
        "id": {},
    }
    over = cases[field]
    if field == "id":
        (tmp_path / "m.toml").write_text(
            'id = "m\\n"\ndescription = "d"\nstatus = "validated"\n'
            '[source]\nhf_repo = "o/r"\n[engine]\nimage = "i:1"\nmax_model_len = 1\n'
            "gpu_memory_utilization = 0.1\n"
        )
    else:
        write_model(tmp_path, "m", **over)
    assert len(errors(tmp_path)) == 1

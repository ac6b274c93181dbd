"""How an engine's typed catalog fields become command-line flags, per engine kind.

One table serves both the renderer (which builds the argv) and the catalog check that refuses a
flag in `args` that a typed field — or sparkctl itself — already sets: two sources for one flag
is how the reference stack's context lengths drifted apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sparkctl.validation import FieldError


class Engine(Protocol):
    """What this module reads of a catalog `[engine]` (spec.Engine, which validates itself with
    the checks below: a protocol, so the two modules do not import each other). The typed fields
    named in the tables are read with getattr."""

    @property
    def kind(self) -> str: ...
    @property
    def args(self) -> list[str]: ...
    @property
    def json_args(self) -> Mapping[str, Mapping[str, Any]]: ...
    @property
    def max_model_len(self) -> int: ...
    @property
    def gpu_memory_utilization(self) -> float: ...


# Typed field → flag. A bool renders its flag when true; `negated` is rendered when false
# (only where the engine's default is "on", so false has to be said).
_Value = str | int | bool


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    aliases: tuple[str, ...] = ()
    negated: str | None = None  # flag for a false bool
    when_true: bool = True  # for a bool: does true render `name`?


VLLM: dict[str, Flag] = {
    "quantization": Flag("--quantization", ("-q",)),
    "kv_cache_dtype": Flag("--kv-cache-dtype"),
    "tool_call_parser": Flag("--tool-call-parser"),
    "reasoning_parser": Flag("--reasoning-parser"),
    "dtype": Flag("--dtype"),
    "load_format": Flag("--load-format"),
    "attention_backend": Flag("--attention-backend"),
    "enable_auto_tool_choice": Flag("--enable-auto-tool-choice"),
    "trust_remote_code": Flag("--trust-remote-code"),
    "enforce_eager": Flag("--enforce-eager"),
    # vLLM turns prefix caching on by default, so false must be said.
    "enable_prefix_caching": Flag("--enable-prefix-caching", negated="--no-enable-prefix-caching"),
    "max_num_seqs": Flag("--max-num-seqs"),
    "max_num_batched_tokens": Flag("--max-num-batched-tokens"),
    "tensor_parallel_size": Flag("--tensor-parallel-size", ("-tp",)),
    "pipeline_parallel_size": Flag("--pipeline-parallel-size", ("-pp",)),
    "chat_template": Flag("--chat-template"),
}
# Flags sparkctl always sets itself.
VLLM_OWN = {
    "max_model_len": Flag("--max-model-len"),
    "gpu_memory_utilization": Flag("--gpu-memory-utilization"),
    "host": Flag("--host"),
    "port": Flag("--port"),
    "served_model_name": Flag("--served-model-name"),
    "model": Flag("--model"),
    "revision": Flag("--revision"),
}

SGLANG: dict[str, Flag] = {
    "quantization": Flag("--quantization"),
    "kv_cache_dtype": Flag("--kv-cache-dtype"),
    "tool_call_parser": Flag("--tool-call-parser"),
    "reasoning_parser": Flag("--reasoning-parser"),
    "dtype": Flag("--dtype"),
    "load_format": Flag("--load-format"),
    "attention_backend": Flag("--attention-backend"),
    "trust_remote_code": Flag("--trust-remote-code"),
    # SGLang says it the other way round: eager = no CUDA graphs; no prefix cache = no radix cache.
    "enforce_eager": Flag("--disable-cuda-graph"),
    "enable_prefix_caching": Flag("--disable-radix-cache", when_true=False),
    "max_num_seqs": Flag("--max-running-requests"),
    "max_num_batched_tokens": Flag("--chunked-prefill-size"),
    "tensor_parallel_size": Flag("--tp-size", ("--tensor-parallel-size", "--tp")),
    "pipeline_parallel_size": Flag("--pp-size", ("--pipeline-parallel-size",)),
    "chat_template": Flag("--chat-template"),
}
SGLANG_OWN = {
    "max_model_len": Flag("--context-length"),
    "gpu_memory_utilization": Flag("--mem-fraction-static"),
    "host": Flag("--host"),
    "port": Flag("--port"),
    "served_model_name": Flag("--served-model-name"),
    "model": Flag("--model-path", ("--model",)),
    "revision": Flag("--revision"),
}

TYPED_FIELDS = tuple(VLLM)


def _tables(kind: str) -> tuple[dict[str, Flag], dict[str, Flag]]:
    if kind == "vllm":
        return VLLM, VLLM_OWN
    if kind == "sglang":
        return SGLANG, SGLANG_OWN
    return {}, {}


def normalise(arg: str) -> str:
    """ "--max_model_len=5" → "--max-model-len": vLLM and SGLang accept either spelling."""
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        return "--" + name[2:].replace("_", "-")
    return name


def _names(flag: Flag) -> Iterator[str]:
    yield flag.name
    yield from flag.aliases
    if flag.negated:
        yield flag.negated


def check_typed_fields_supported(engine: Engine) -> None:
    typed, _ = _tables(engine.kind)
    for field in TYPED_FIELDS:
        if getattr(engine, field) is not None and field not in typed:
            if engine.kind == "openai":
                raise FieldError(field, 'kind "openai" renders no flags; put it in args')
            raise FieldError(field, f'not supported by kind "{engine.kind}"; put it in args')


def check_args(engine: Engine) -> None:
    """Refuse a flag in args that a typed field, json_args or sparkctl itself sets."""
    typed, own = _tables(engine.kind)
    taken: dict[str, str] = {}
    for field, flag in own.items():
        for name in _names(flag):
            taken[name] = f"sparkctl sets it (from {_own_source(field)})"
    for field, flag in typed.items():
        if getattr(engine, field) is not None:
            for name in _names(flag):
                taken[name] = f"engine.{field} sets it"
    for key in engine.json_args:
        taken["--" + key] = f"engine.json_args.{key} sets it"
    for i, arg in enumerate(engine.args):
        name = normalise(arg)
        if name in taken:
            raise FieldError(f"args[{i}]", f"{name}: {taken[name]}; remove it from args")


def _own_source(field: str) -> str:
    return {
        "max_model_len": "engine.max_model_len",
        "gpu_memory_utilization": "engine.gpu_memory_utilization",
        "host": "the network settings",
        "port": "engine.port/host_port",
        "served_model_name": "the id",
        "model": "source.hf_repo",
        "revision": "source.revision",
    }[field]


def engine_flags(
    engine: Engine,
    *,
    model_id: str,
    hf_repo: str,
    revision: str,
    host: str,
    port: int,
    chat_template: str | None,
) -> list[str]:
    """The engine's argv after its command: model, sparkctl's own flags, typed fields, JSON
    flags and finally `args`, in a fixed order so rendering is deterministic."""
    if engine.kind == "openai":
        return list(engine.args)
    typed, own = _tables(engine.kind)
    out: list[str] = []
    if engine.kind == "vllm":
        out.append(hf_repo)
    else:
        out += [own["model"].name, hf_repo]
    if revision != "main":
        out += [own["revision"].name, revision]
    out += [own["served_model_name"].name, model_id]
    out += [own["host"].name, host, own["port"].name, str(port)]
    out += [own["max_model_len"].name, str(engine.max_model_len)]
    out += [own["gpu_memory_utilization"].name, _fraction(engine.gpu_memory_utilization)]
    for field, flag in typed.items():
        value: _Value | None = chat_template if field == "chat_template" else getattr(engine, field)
        if value is None:
            continue
        if isinstance(value, bool):
            if value == flag.when_true:
                out.append(flag.name)
            elif flag.negated and not value:
                out.append(flag.negated)
        else:
            out += [flag.name, str(value)]
    for key, table in engine.json_args.items():
        out += ["--" + key, json.dumps(table, separators=(",", ":"), ensure_ascii=False)]
    out += engine.args
    return out


def _fraction(x: float) -> str:
    return f"{x:.4f}".rstrip("0").rstrip(".")

"""The catalog schema (BRIEF §4.1): one `models/<id>.toml` per model.

Everything here is per file; checks across files (duplicate ids and aliases, port clashes, the
memory budget) live in `checks.py`. Strings that end up in unit files, paths or command lines are
typed `UnitStr` (no control characters) or tighter patterns; quoting them is the renderer's job.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from sparkctl.catalog import flags
from sparkctl.quantities import Duration, IdleTimeout, Size
from sparkctl.settings import NodeName
from sparkctl.validation import ID_PATTERN, FieldError, StrictModel

_ID_RE = re.compile(ID_PATTERN)
ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+-]*$")
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HF_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$", re.IGNORECASE)
_PATH_RE = re.compile(r"^/[A-Za-z0-9._/+@=-]*$")
_DEVICE_RE = re.compile(r"^/dev/[A-Za-z0-9._/-]+(:/dev/[A-Za-z0-9._/-]+)?(:[rwm]{1,3})?$")
_FLAG_KEY_RE = re.compile(r"^[a-z][a-z0-9-]*$")
ULIMIT_NAMES = frozenset(
    {"core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss"}
    | {"rtprio", "rttime", "sigpending", "stack"}
)


def check_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(
            f"must match {ID_PATTERN} (lowercase letters, digits, '.', '_', '-'; at most 64), got {value!r}"
        )
    if value.endswith("-proxy"):
        raise ValueError(f"must not end in '-proxy' (reserved), got {value!r}")
    if value == "models":
        raise ValueError("'models' is reserved (it is a route: /v1/models)")
    if value == "network":
        # sparkctl.network, the engines' private Podman network, runs as sparkctl-network.service
        raise ValueError("'network' is reserved (sparkctl-network.service is the engines' network)")
    if value == "gateway":
        # Every model's socket is handed to the daemon named by its id (FileDescriptorName=);
        # sparkctl.socket's own is "gateway".
        raise ValueError("'gateway' is reserved (it names the daemon's own socket)")
    return value


def _fraction(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"must be in (0, 1], got {value}")
    return value


def _no_control(value: str) -> str:
    if _CONTROL_RE.search(value):
        raise ValueError(f"must not contain control characters (newline, tab, …), got {value!r}")
    return value


def _pattern(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"must be {what}, got {value!r}")
        return value

    return AfterValidator(check)


def _absolute_path(value: str) -> str:
    if not _PATH_RE.fullmatch(value) or ".." in PurePosixPath(value).parts:
        raise ValueError(
            "must be an absolute path of letters, digits and ._/+@=- (no '..', ':', ',' or spaces), "
            f"got {value!r}"
        )
    return value


def _device(value: str) -> str:
    if not _DEVICE_RE.fullmatch(value) or ".." in value.split("/"):
        raise ValueError(f"must be a host device like /dev/infiniband, got {value!r}")
    return value


_CAPABILITY_RE = re.compile(r"^(CAP_)?[A-Z][A-Z_]{1,30}$")


def _capability(value: str) -> str:
    if not _CAPABILITY_RE.fullmatch(value):
        raise ValueError(f"must be a Linux capability like SYS_NICE, got {value!r}")
    return value.removeprefix("CAP_")


def _relative_file(value: str) -> str:
    p = PurePosixPath(value)
    if p.is_absolute() or ".." in p.parts or not _PATH_RE.fullmatch("/" + value):
        raise ValueError(f"must be a file name relative to the catalog directory (no '..'), got {value!r}")
    return value


ModelId = Annotated[str, AfterValidator(check_id)]
Alias = Annotated[str, _pattern(re.compile(ALIAS_PATTERN), f"a model name matching {ALIAS_PATTERN}")]
UnitStr = Annotated[str, AfterValidator(_no_control)]


def _no_trailing_backslash(value: str) -> str:
    # Rendered into Description=: a line that ends in a backslash is continued by systemd, and the
    # next line (Conflicts=, the backstop of one GPU tenant) would become part of the text.
    if value.endswith("\\"):
        raise ValueError("must not end with a backslash (it would continue the unit file's line)")
    return value


def _word(value: str) -> str:
    # Quadlet writes a lone ";" unquoted into ExecStart= (where it separates commands) and drops
    # empty words, so neither can reach a container intact.
    if value == "":
        raise ValueError("must not be empty (an empty word cannot be passed through Quadlet)")
    if value == ";":
        raise ValueError("a lone ';' cannot be passed through Quadlet (it separates commands)")
    return value


Word = Annotated[str, AfterValidator(_no_control), AfterValidator(_word)]
Token = Annotated[str, _pattern(_TOKEN_RE, "a plain token (letters, digits, ._:/+-)")]
AbsPath = Annotated[str, AfterValidator(_absolute_path)]
PositiveInt = Annotated[int, Field(gt=0)]
TcpPort = Annotated[int, Field(gt=0, lt=65536)]


class Status(StrEnum):
    VALIDATED = "validated"
    EXPERIMENTAL = "experimental"
    DISABLED = "disabled"


Capability = Literal["chat", "tools", "reasoning", "vision", "embeddings", "code", "audio"]
EngineKind = Literal["vllm", "sglang", "openai"]
Runtime = Literal["container", "process"]


class Source(StrictModel):
    hf_repo: Annotated[
        str,
        AfterValidator(_no_control),
        AfterValidator(lambda v: v if _HF_REPO_RE.fullmatch(v) or _PATH_RE.fullmatch(v) else _bad_repo(v)),
    ]
    revision: Token = "main"


def _bad_repo(value: str) -> str:
    raise ValueError(f'must be a Hugging Face repo id ("org/name") or an absolute path, got {value!r}')


class Volume(StrictModel):
    source: AbsPath
    target: AbsPath
    read_only: bool = True


def _default_ulimits() -> dict[str, int]:
    return {"memlock": -1, "stack": 67108864}


class Engine(StrictModel):
    kind: EngineKind = "vllm"
    runtime: Runtime = "container"
    image: (
        Annotated[str, _pattern(_IMAGE_RE, "an image reference like localhost/sparkctl-vllm:latest")] | None
    ) = None
    command: list[Word] | None = None
    entrypoint: list[Word] = Field(default_factory=list)
    port: TcpPort = 8000
    host_port: TcpPort | None = None
    max_model_len: PositiveInt
    gpu_memory_utilization: Annotated[float, AfterValidator(_fraction)]
    quantization: Token | None = None
    kv_cache_dtype: Token | None = None
    tool_call_parser: Token | None = None
    reasoning_parser: Token | None = None
    dtype: Token | None = None
    load_format: Token | None = None
    attention_backend: Token | None = None
    enable_auto_tool_choice: bool | None = None
    trust_remote_code: bool | None = None
    enforce_eager: bool | None = None
    enable_prefix_caching: bool | None = None
    max_num_seqs: PositiveInt | None = None
    max_num_batched_tokens: PositiveInt | None = None
    tensor_parallel_size: PositiveInt | None = None
    pipeline_parallel_size: PositiveInt | None = None
    json_args: dict[str, dict[str, Any]] = Field(default_factory=dict)
    chat_template: Annotated[str, AfterValidator(_relative_file)] | None = None
    args: list[Word] = Field(default_factory=list)
    env: dict[str, UnitStr] = Field(default_factory=dict)
    devices: list[Annotated[str, AfterValidator(_device)]] = Field(default_factory=list)
    # A container engine runs with every capability dropped; one it is known to need is kept by
    # naming it here (say why in `notes`).
    capabilities: list[Annotated[str, AfterValidator(_capability)]] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    shm_size: Size = 16 * 1024**3
    ulimits: dict[str, int] = Field(default_factory=_default_ulimits)
    health_path: Annotated[str, _pattern(re.compile(r"^/[A-Za-z0-9._/~-]*$"), "an absolute URL path")] = (
        "/health"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Engine:
        if self.runtime == "container" and self.image is None:
            raise FieldError("image", 'required when runtime is "container"')
        if self.runtime == "process":
            if self.image is not None:
                raise FieldError("image", 'only for runtime "container"')
            if self.entrypoint:
                raise FieldError("entrypoint", 'only for runtime "container"')
            if self.kind == "openai" and not self.command:
                raise FieldError("command", 'required for kind "openai" with runtime "process"')
        for key in self.env:
            if not _ENV_KEY_RE.fullmatch(key):
                raise FieldError(f"env.{key}", "not a valid environment variable name")
        for key in self.json_args:
            if not _FLAG_KEY_RE.fullmatch(key):
                raise FieldError(
                    f"json_args.{key}",
                    'must be a flag name without leading dashes, like "speculative-config"',
                )
        for name in self.ulimits:
            if name not in ULIMIT_NAMES:
                raise FieldError(
                    f"ulimits.{name}", f"unknown limit (allowed: {', '.join(sorted(ULIMIT_NAMES))})"
                )
        if self.enable_auto_tool_choice and self.tool_call_parser is None and self.kind == "vllm":
            raise FieldError("enable_auto_tool_choice", "needs tool_call_parser (vLLM refuses to start)")
        flags.check_typed_fields_supported(self)
        flags.check_args(self)
        return self


class Serve(StrictModel):
    idle_timeout: IdleTimeout | None = None
    start_timeout: Duration = 30 * 60.0
    # How long the engine may take to exit once asked to (SIGTERM): then it is killed. vLLM
    # exits in seconds; one hung in its teardown (a frozen process, a stuck NCCL shutdown) would
    # otherwise hold the GPU, and every request queued behind it, for systemd's default 90 s.
    stop_timeout: Duration = 10.0
    gpu: Literal["exclusive", "shared"] = "shared"
    pinned: bool = False
    preload: bool = False
    max_concurrent: int = Field(default=0, ge=0)
    direct_port: Annotated[int, Field(ge=0, lt=65536)] | None = None
    # How many Sparks the model spans (BRIEF §9, #15): its head on the node that owns it, a
    # worker on each other node, the GPU tenant of all of them while it runs; and vLLM's
    # executor across them: Ray, or vLLM's own multi-node mode (--nnodes/--node-rank/--headless).
    nodes: int = Field(default=1, ge=1, le=64)
    multinode: Literal["ray", "native"] = "ray"
    # The node that runs the head of a spanning model (a cluster.node name): the same catalog file
    # sits on every node it spans, and this says which of them owns it (docs/cluster.md).
    owner: NodeName | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Serve:
        if self.gpu == "exclusive" and self.pinned:
            raise FieldError(
                "pinned",
                "an exclusive model shares the GPU with nobody, so it cannot stay pinned beside "
                'others; use gpu = "shared" or pinned = false',
            )
        if self.start_timeout <= 0:
            raise FieldError("start_timeout", "must be longer than 0")
        if self.stop_timeout < 1:
            # podman's --stop-timeout counts whole seconds, and 0 would kill without asking
            raise FieldError("stop_timeout", "must be at least 1s")
        if self.nodes > 1 and self.gpu != "exclusive":
            # It is the tenant of every node it spans: its workers take a node each, and the
            # peers' reservations are granted like a local exclusive model's.
            raise FieldError(
                "gpu", 'a model that spans nodes is the only tenant of each: use gpu = "exclusive"'
            )
        if self.nodes == 1 and self.owner is not None:
            raise FieldError("owner", "only for a model that spans nodes (serve.nodes > 1)")
        return self


class RequestShaping(StrictModel):
    defaults: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)
    strip: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    force_tool_choice: Literal["required"] | None = None
    text_only: bool = False
    # The chat template's thinking switch (chat_template_kwargs enable_thinking / thinking):
    # map a client's `thinking` and `reasoning_effort` onto it (gateway/thinking.py) …
    thinking_switch: bool = False
    # … and what it is when the client says nothing (both names set).
    thinking_default: bool | None = None

    @model_validator(mode="after")
    def _model_untouchable(self) -> RequestShaping:
        # The gateway routes by `model` and rewrites aliases to the id; shaping must not fight it.
        for name, table in (("defaults", self.defaults), ("overrides", self.overrides)):
            if "model" in table:
                raise FieldError(f"{name}.model", "the model name cannot be shaped")
        if "model" in self.strip:
            raise FieldError("strip", "'model' cannot be stripped")
        return self

    @property
    def active(self) -> bool:
        return bool(
            self.defaults
            or self.overrides
            or self.strip
            or self.force_tool_choice
            or self.text_only
            or self.thinking_switch
            or self.thinking_default is not None
        )


def _default_capabilities() -> list[Capability]:
    return ["chat"]


class ModelSpec(StrictModel):
    id: ModelId
    description: Annotated[
        UnitStr, AfterValidator(_no_trailing_backslash), Field(min_length=1, max_length=200)
    ]
    status: Annotated[Status, Field(strict=False)]
    disabled_reason: Annotated[UnitStr, Field(min_length=1)] | None = None
    notes: str = ""
    aliases: list[Alias] = Field(default_factory=list)
    capabilities: list[Capability] = Field(default_factory=_default_capabilities)
    context_limit: PositiveInt | None = None
    source: Source
    engine: Engine
    serve: Serve = Field(default_factory=Serve)
    request: RequestShaping = Field(default_factory=RequestShaping)

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.status is Status.DISABLED and self.disabled_reason is None:
            raise FieldError("disabled_reason", 'required when status is "disabled"')
        if self.status is not Status.DISABLED and self.disabled_reason is not None:
            raise FieldError("disabled_reason", 'only for status "disabled"')
        if len(set(self.capabilities)) != len(self.capabilities):
            raise FieldError("capabilities", "listed twice")
        if len(set(self.aliases)) != len(self.aliases):
            raise FieldError("aliases", "listed twice")
        if self.id in self.aliases:
            raise FieldError("aliases", "the id itself is not an alias")
        if self.serve.nodes > 1:
            _check_spanning(self)
        if self.context_limit is not None and self.context_limit > self.engine.max_model_len:
            raise FieldError(
                "context_limit",
                f"must be at most engine.max_model_len ({self.engine.max_model_len}), "
                f"got {self.context_limit}",
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.status is not Status.DISABLED

    @property
    def advertised_context(self) -> int:
        return self.context_limit or self.engine.max_model_len


# What sparkctl says itself to an engine that spans nodes (units/span.py), so never in args.
MULTINODE_FLAGS = frozenset(
    {
        "--nnodes",
        "--node-rank",
        "--master-addr",
        "--master-port",
        "--headless",
        "--distributed-executor-backend",
        "--tensor-parallel-size",
        "-tp",
        "--pipeline-parallel-size",
        "-pp",
    }
)


def _check_spanning(spec: ModelSpec) -> None:
    """A model over several Sparks, one GPU each (BRIEF §9): vLLM, its parallel sizes covering
    exactly the nodes, and nothing in args that the multi-node rendering says itself."""
    engine, nodes = spec.engine, spec.serve.nodes
    if engine.kind != "vllm":
        raise FieldError(
            "serve.nodes", 'models that span nodes run on vLLM\'s multi-node executors: kind "vllm"'
        )
    tp, pp = engine.tensor_parallel_size or 0, engine.pipeline_parallel_size or 1
    if tp and tp * pp != nodes:
        raise FieldError(
            "engine.tensor_parallel_size",
            f"tensor_parallel_size × pipeline_parallel_size must be serve.nodes ({nodes}: one GPU per "
            f"Spark), got {tp} × {pp}",
        )
    if not tp and nodes % pp:
        raise FieldError(
            "engine.pipeline_parallel_size", f"must divide serve.nodes ({nodes}: one GPU per Spark), got {pp}"
        )
    for i, arg in enumerate(engine.args):
        if flags.normalise(arg) in MULTINODE_FLAGS:
            raise FieldError(
                f"engine.args[{i}]",
                f"{flags.normalise(arg)}: sparkctl sets it for a model that spans nodes "
                "(serve.nodes, serve.multinode, engine.tensor_parallel_size and pipeline_parallel_size); "
                "remove it from args",
            )
    if spec.serve.multinode == "ray" and engine.runtime == "container":
        # The Ray form starts Ray in the container before vLLM, through its own entrypoint: an
        # entrypoint wrapper of the catalog's would not run on the workers (they run Ray only),
        # and the image's own is replaced, so the command must say how vLLM is run.
        if engine.entrypoint:
            raise FieldError(
                "engine.entrypoint",
                'not with multinode = "ray" (the workers run only Ray, not this wrapper): bake the '
                'fix into the image, or use multinode = "native"',
            )
        if engine.command is None:
            raise FieldError(
                "engine.command",
                'required with multinode = "ray" in a container (Ray is started before it, in place '
                'of the image\'s entrypoint): e.g. ["vllm", "serve"]',
            )


def json_schema() -> dict[str, Any]:
    """The catalog file's JSON schema, for editors and docs/catalog.schema.json."""
    schema = ModelSpec.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "sparkctl catalog entry (models/<id>.toml)"
    return schema

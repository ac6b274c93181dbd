"""`sparkctl emulate`: a stand-in for a vLLM OpenAI server that needs no GPU.

It speaks vLLM's wire protocol (routes, JSON shapes, SSE framing, error bodies, Prometheus names)
closely enough for the gateway, the tests and the benchmarks to treat it as a real engine, while
its behaviour over time is dictated by knobs: how long it loads, how fast it generates, how much
memory it holds, when it turns unhealthy or crashes.

This module runs inside a minimal container image that holds only Python, aiohttp and this
package, so it imports nothing beyond the standard library and aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import math
import mmap
import os
import secrets
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

VERSION = "0.0.0+sparkctl.emulator"
DEFAULT_MAX_TOKENS = 16
EMBEDDING_DIM = 32

_PAGE = 4096
_ARG_PIECE = 8  # characters of tool-call arguments per streamed chunk (one "token" each)
_YIELD_EVERY = 64  # unpaced generation still lets other connections in this often
_SHUTDOWN_GRACE_S = 0.1  # per connection, twice over: wait for the handler, then for its cancel
_MODULE_LOADED = time.monotonic()

# Generated text cycles through these words; each token is a word plus a space.
_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris "
    "nisi aliquip ex ea commodo consequat"
)
_TOKENS = tuple(w + " " for w in _LOREM.split())
_TOKENS_JSON = tuple(json.dumps(t).encode() for t in _TOKENS)

_JSON = "application/json"
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DONE = b"data: [DONE]\n\n"
_OPEN = b'"logprobs":null,"finish_reason":null}]}\n\n'
_DUMMIES: dict[str, Any] = {"string": "x", "number": 1, "integer": 1, "boolean": True, "null": None}


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, slots=True)
class Config:
    model: str
    served_names: tuple[str, ...]
    host: str
    port: int
    max_model_len: int
    api_key: str | None
    load_time: float
    tokens_per_second: float
    memory_mb: int
    unhealthy_after: float | None
    crash_after: float | None
    exit_code: int
    log_requests: bool


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: an unknown vLLM flag must never be taken for a prefix of one of ours.
    p = argparse.ArgumentParser(
        prog="sparkctl emulate",
        description="Emulate a vLLM OpenAI-compatible server without a GPU.",
        allow_abbrev=False,
    )
    p.add_argument("model_tag", nargs="?", metavar="MODEL")
    p.add_argument("--model", dest="model_flag")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", nargs="+")
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))
    p.add_argument("--enable-log-requests", action="store_true")
    knobs = p.add_argument_group("emulation knobs (not vLLM flags)")
    knobs.add_argument("--load-time", type=float, default=0.0, metavar="S")
    knobs.add_argument("--tokens-per-second", type=float, default=0.0, metavar="N")
    knobs.add_argument("--memory-mb", type=int, default=0, metavar="N")
    knobs.add_argument("--unhealthy-after", type=float, default=None, metavar="S")
    knobs.add_argument("--crash-after", type=float, default=None, metavar="S")
    knobs.add_argument("--exit-code", type=int, default=1, metavar="N")
    return p


def parse_args(argv: list[str]) -> Config:
    """Parse `[serve] MODEL [vLLM flags]`; flags we do not know are vLLM's and are ignored."""
    if argv and argv[0] == "serve":
        argv = argv[1:]
    parser = _parser()
    ns, _unknown = parser.parse_known_args(argv)
    # --model wins: an unknown flag's value may have landed in the positional slot.
    model = ns.model_flag or ns.model_tag
    if not model:
        parser.error("a MODEL is required (positional or --model)")
    return Config(
        model=model,
        served_names=tuple(ns.served_model_name or [model]),
        host=ns.host,
        port=ns.port,
        max_model_len=ns.max_model_len,
        api_key=ns.api_key or None,
        load_time=max(0.0, ns.load_time),
        tokens_per_second=max(0.0, ns.tokens_per_second),
        memory_mb=max(0, ns.memory_mb),
        unhealthy_after=ns.unhealthy_after,
        crash_after=ns.crash_after,
        exit_code=ns.exit_code,
        log_requests=ns.enable_log_requests,
    )


# --------------------------------------------------------------------------------------------
# Request parsing: every malformed request becomes an ApiError carrying vLLM's error body.


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.status}}
        return _json_response(body, self.status)


def _bad(message: str) -> ApiError:
    return ApiError(400, "BadRequestError", message)


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str  # a JSON document, as OpenAI transmits it


@dataclass(frozen=True, slots=True)
class Job:
    """One validated generation request."""

    chat: bool
    model: str
    prompt_tokens: int
    max_tokens: int
    natural_end: bool  # no max_tokens asked: running out reads as the model stopping by itself
    stream: bool
    include_usage: bool
    stop: tuple[str, ...]
    tool: ToolCall | None


def _words(text: str) -> int:
    return len(text.split())


def _chat_prompt(messages: Any) -> tuple[int, str]:
    """Prompt tokens of a chat, and the role of its last message."""
    if not isinstance(messages, list) or not messages:
        raise _bad("`messages` must be a non-empty array of message objects.")
    total = 0
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _bad("Each message must be an object with a string `role`.")
        content = m.get("content")
        if isinstance(content, str):
            total += _words(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    raise _bad("Message content parts must be objects.")
                text = part.get("text")
                if isinstance(text, str):
                    total += _words(text)
        elif content is not None:
            raise _bad("Message `content` must be a string, an array of parts or null.")
    return total, messages[-1]["role"]


def _completion_prompt(prompt: Any) -> int:
    if isinstance(prompt, str):
        return _words(prompt)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return sum(_words(p) for p in prompt)
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return len(prompt)  # token ids
        if all(isinstance(p, list) for p in prompt):
            return sum(len(p) for p in prompt)
    raise _bad("`prompt` must be a string, an array of strings or an array of token ids.")


def _max_tokens(body: dict[str, Any]) -> int | None:
    # vLLM: max_completion_tokens supersedes the deprecated max_tokens.
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad("`max_tokens` must be an integer.")
    if value < 1:
        raise _bad(f"max_tokens must be at least 1, got {value}.")
    return value


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(s for s in stop if s)
    raise _bad("`stop` must be a string or an array of strings.")


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"`{key}` must be a boolean.")
    return value


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise _bad("`stream_options` must be an object.")
    return _flag(options, "include_usage")


def _tool_functions(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("`tools` must be an array.")
    functions = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad("Each tool must be an object with a `function` that has a string `name`.")
        functions.append(fn)
    return functions


def _pick_tool(body: dict[str, Any], last_role: str) -> ToolCall | None:
    """The tool call to answer with, or None to answer with text."""
    tools = body.get("tools")
    if not tools:
        return None
    functions = _tool_functions(tools)
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    if isinstance(choice, dict):
        fn_choice = choice.get("function")
        name = fn_choice.get("name") if isinstance(fn_choice, dict) else None
        chosen = next((fn for fn in functions if fn["name"] == name), None)
        if chosen is None:
            raise _bad(f"Tool '{name}' has not been passed in `tools`.")
    elif choice == "required":
        chosen = functions[0]
    elif choice in (None, "auto"):
        # A model that just received a tool result answers in prose.
        if last_role != "user":
            return None
        chosen = functions[0]
    else:
        raise _bad("`tool_choice` must be 'none', 'auto', 'required' or a named function.")
    arguments = _dummy_object(chosen.get("parameters"))
    return ToolCall(chosen["name"], _dumps(arguments).decode())


def _dummy_object(schema: Any) -> dict[str, Any]:
    """An object that fills every required property of a JSON schema with a plausible value."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    required = schema.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
    return {name: _dummy_value(props.get(name)) for name in names}


def _dummy_value(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return "x"
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return _dummy_object(schema)
    if kind == "array":
        return []
    return _DUMMIES.get(kind, "x") if isinstance(kind, str) else "x"


def _embedding_inputs(value: Any) -> list[tuple[str, int]]:
    """(text to hash, prompt tokens) for each input."""
    if isinstance(value, str):
        return [(value, _words(value))]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return [(v, _words(v)) for v in value]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [(" ".join(map(str, value)), len(value))]
        if all(isinstance(v, list) for v in value):
            return [(" ".join(map(str, v)), len(v)) for v in value]
    raise _bad("`input` must be a string, an array of strings or an array of token ids.")


def _embedding(text: str, base64_encoded: bool) -> list[float] | str:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [b - 127.5 for b in digest[:EMBEDDING_DIM]]  # never zero, so the norm is never zero
    norm = math.sqrt(sum(x * x for x in raw))
    vector = [x / norm for x in raw]
    if base64_encoded:
        return base64.b64encode(struct.pack(f"<{EMBEDDING_DIM}f", *vector)).decode()
    return vector


async def _read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _bad(f"Invalid JSON in request body: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    return body


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_dumps(body), status=status, content_type=_JSON)


# --------------------------------------------------------------------------------------------
# Generation


@dataclass(slots=True)
class Stats:
    running: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: dict[str, int] = field(default_factory=lambda: {"stop": 0, "length": 0, "abort": 0})


@dataclass(frozen=True, slots=True)
class Outcome:
    text: str
    call: tuple[str, ToolCall] | None  # (call id, call)
    completion_tokens: int
    finish: str


class Pacer:
    """Spaces tokens 1/N s apart against a deadline, so per-token overheads do not slow the rate."""

    __slots__ = ("_count", "_interval", "_next")

    def __init__(self, tokens_per_second: float) -> None:
        self._interval = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self._next = time.monotonic()
        self._count = 0

    async def tick(self) -> None:
        if self._interval:
            self._next += self._interval
            delay = self._next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            return
        self._count += 1
        if self._count % _YIELD_EVERY == 0:
            await asyncio.sleep(0)


class Sse:
    """An open event stream and the byte templates of one request's chunks."""

    __slots__ = ("base", "resp", "tokens")

    def __init__(self, resp: web.StreamResponse, job: Job, rid: str, created: int) -> None:
        obj = "chat.completion.chunk" if job.chat else "text_completion"
        model = json.dumps(job.model)
        self.resp = resp
        # Everything up to the choices array; a chunk is base + choices + "}\n\n".
        self.base = (
            f'data: {{"id":"{rid}","object":"{obj}","created":{created},"model":{model},"choices":'.encode()
        )
        head = self.base + b'[{"index":0,' + (b'"delta":{"content":' if job.chat else b'"text":')
        tail = (b"}," if job.chat else b",") + _OPEN
        # Token chunks differ only by their word: build them once per request, not once per token.
        self.tokens = [head + word + tail for word in _TOKENS_JSON]

    async def send(self, data: bytes) -> None:
        await self.resp.write(data)

    async def send_choice(self, choice: dict[str, Any]) -> None:
        await self.resp.write(self.base + _dumps([choice]) + b"}\n\n")


class Engine:
    """Generates tokens for jobs and keeps the counters /metrics reports."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stats = Stats()

    async def generate(self, job: Job, sse: Sse | None) -> Outcome:
        stats = self.stats
        stats.running += 1
        stats.prompt_tokens += job.prompt_tokens
        try:
            outcome = await (self._tool(job.tool, sse) if job.tool else self._text(job, sse))
        except BaseException:
            # Client gone (cancelled handler or failed write), or shutdown: vLLM counts an abort.
            stats.finished["abort"] += 1
            raise
        finally:
            stats.running -= 1
        stats.finished["length" if outcome.finish == "length" else "stop"] += 1
        return outcome

    async def _text(self, job: Job, sse: Sse | None) -> Outcome:
        pacer = Pacer(self.cfg.tokens_per_second)
        stats = self.stats
        stops = job.stop
        words: list[str] = []
        finish = "stop" if job.natural_end else "length"
        count = 0
        for i in range(job.max_tokens):
            await pacer.tick()
            k = i % len(_TOKENS)
            if stops and any(s in _TOKENS[k] for s in stops):
                finish = "stop"
                break
            if sse is None:
                words.append(_TOKENS[k])
            else:
                await sse.send(sse.tokens[k])
            count += 1
            stats.generation_tokens += 1
        return Outcome("".join(words), None, count, finish)

    async def _tool(self, tool: ToolCall, sse: Sse | None) -> Outcome:
        call_id = "call_" + secrets.token_hex(12)
        args = tool.arguments
        pieces = [args[i : i + _ARG_PIECE] for i in range(0, len(args), _ARG_PIECE)]
        pacer = Pacer(self.cfg.tokens_per_second)
        await pacer.tick()
        if sse is not None:
            header = {"index": 0, "id": call_id, "type": "function"}
            header["function"] = {"name": tool.name, "arguments": ""}
            await sse.send_choice(_delta({"tool_calls": [header]}))
        self.stats.generation_tokens += 1
        for piece in pieces:
            await pacer.tick()
            if sse is not None:
                await sse.send_choice(
                    _delta({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                )
            self.stats.generation_tokens += 1
        return Outcome("", (call_id, tool), 1 + len(pieces), "tool_calls")


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def _usage(job: Job, outcome: Outcome) -> dict[str, int]:
    completion = outcome.completion_tokens
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": job.prompt_tokens + completion,
    }


def _tool_call_json(call_id: str, call: ToolCall) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def _completion_body(job: Job, outcome: Outcome, rid: str, created: int) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0}
    if not job.chat:
        choice["text"] = outcome.text
    elif outcome.call is not None:
        call = _tool_call_json(*outcome.call)
        choice["message"] = {"role": "assistant", "content": None, "tool_calls": [call]}
    else:
        choice["message"] = {"role": "assistant", "content": outcome.text}
    choice["logprobs"] = None
    choice["finish_reason"] = outcome.finish
    return {
        "id": rid,
        "object": "chat.completion" if job.chat else "text_completion",
        "created": created,
        "model": job.model,
        "choices": [choice],
        "usage": _usage(job, outcome),
    }


# --------------------------------------------------------------------------------------------
# HTTP


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_METRIC_HELP = {
    "vllm:num_requests_running": ("gauge", "Number of requests in model execution batches."),
    "vllm:num_requests_waiting": ("gauge", "Number of requests waiting to be processed."),
    "vllm:prompt_tokens_total": ("counter", "Number of prefill tokens processed."),
    "vllm:generation_tokens_total": ("counter", "Number of generation tokens processed."),
    "vllm:request_success_total": ("counter", "Count of successfully processed requests."),
}


def render_metrics(stats: Stats, model_name: str) -> str:
    """Prometheus text exposition, in the names and label sets vLLM uses."""
    label = f'model_name="{_label(model_name)}"'
    samples: dict[str, list[tuple[str, float]]] = {
        "vllm:num_requests_running": [(label, stats.running)],
        "vllm:num_requests_waiting": [(label, 0)],
        "vllm:prompt_tokens_total": [(label, stats.prompt_tokens)],
        "vllm:generation_tokens_total": [(label, stats.generation_tokens)],
        "vllm:request_success_total": [
            (f'finished_reason="{reason}",{label}', n) for reason, n in stats.finished.items()
        ],
    }
    lines: list[str] = []
    for name, values in samples.items():
        kind, doc = _METRIC_HELP[name]
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{{{labels}}} {float(value)}" for labels, value in values)
    return "\n".join(lines) + "\n"


def _auth_middleware(api_key: str) -> Middleware:
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Like vLLM: only /v1 is guarded, and CORS preflights pass.
        if request.method != "OPTIONS" and request.path.startswith("/v1"):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _json_response({"error": "Unauthorized"}, 401)
        return await handler(request)

    return auth


class Server:
    """The routes of vLLM's OpenAI-compatible server, backed by an Engine."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.healthy = True
        self.accepted_models = frozenset((*cfg.served_names, cfg.model))
        self.created = int(time.time())
        self.ballast: mmap.mmap | None = None
        entries = [self._model_card(name) for name in cfg.served_names]
        self._models_body = _dumps({"object": "list", "data": entries})

    def _model_card(self, name: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": self.created,
            "owned_by": "vllm",
            "root": self.cfg.model,
            "parent": None,
            "max_model_len": self.cfg.max_model_len,
            "permission": [],
        }

    def app(self) -> web.Application:
        middlewares = [_auth_middleware(self.cfg.api_key)] if self.cfg.api_key else []
        # Long prompts are legitimate here; aiohttp's 1 MiB default would reject them.
        app = web.Application(middlewares=middlewares, client_max_size=256 << 20)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ping", self.health)
        app.router.add_post("/ping", self.health)  # SageMaker-style probes POST it, and vLLM answers
        app.router.add_get("/version", self.version)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def version(self, request: web.Request) -> web.Response:
        return _json_response({"version": VERSION})

    async def metrics(self, request: web.Request) -> web.Response:
        text = render_metrics(self.engine.stats, self.cfg.served_names[0])
        return web.Response(body=text.encode(), headers={"Content-Type": _METRICS_TYPE})

    async def models(self, request: web.Request) -> web.Response:
        return web.Response(body=self._models_body, content_type=_JSON)

    def _model(self, body: dict[str, Any]) -> str:
        name = body.get("model")
        if name is None:
            return self.cfg.served_names[0]
        if not isinstance(name, str):
            raise _bad("`model` must be a string.")
        if name not in self.accepted_models:
            raise ApiError(404, "NotFoundError", f"The model `{name}` does not exist.")
        return name

    def _job(
        self,
        body: dict[str, Any],
        model: str,
        prompt_tokens: int,
        *,
        chat: bool,
        tool: ToolCall | None = None,
    ) -> Job:
        requested = _max_tokens(body)
        max_tokens = DEFAULT_MAX_TOKENS if requested is None else requested
        limit = self.cfg.max_model_len
        if prompt_tokens + max_tokens > limit:
            raise _bad(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in "
                "the completion). Please reduce the length of the messages or completion."
            )
        stream = _flag(body, "stream")
        return Job(
            chat=chat,
            model=model,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            natural_end=requested is None,
            stream=stream,
            include_usage=stream and _include_usage(body),
            stop=_stop(body),
            tool=tool,
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _read_json(request)
            model = self._model(body)  # an unknown model is a 404 before anything else is judged
            prompt_tokens, last_role = _chat_prompt(body.get("messages"))
            job = self._job(body, model, prompt_tokens, chat=True, tool=_pick_tool(body, last_role))
        except ApiError as exc:
            return exc.response()
        return await self._serve(request, job)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await _read_json(request)
            model = self._model(body)
            if "prompt" not in body:
                raise _bad("`prompt` is required.")
            job = self._job(body, model, _completion_prompt(body["prompt"]), chat=False)
        except ApiError as exc:
            return exc.response()
        return await self._serve(request, job)

    async def embeddings(self, request: web.Request) -> web.Response:
        try:
            body = await _read_json(request)
            model = self._model(body)
            inputs = _embedding_inputs(body.get("input"))
            encoding = body.get("encoding_format") or "float"
            if encoding not in ("float", "base64"):
                raise _bad("`encoding_format` must be 'float' or 'base64'.")
        except ApiError as exc:
            return exc.response()
        tokens = sum(n for _, n in inputs)
        self.engine.stats.prompt_tokens += tokens
        data = [
            {"object": "embedding", "index": i, "embedding": _embedding(text, encoding == "base64")}
            for i, (text, _) in enumerate(inputs)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json_response({"object": "list", "data": data, "model": model, "usage": usage})

    async def _serve(self, request: web.Request, job: Job) -> web.StreamResponse:
        rid = ("chatcmpl-" if job.chat else "cmpl-") + secrets.token_hex(16)
        created = int(time.time())
        started = time.monotonic()
        outcome: Outcome | None
        if job.stream:
            resp, outcome = await self._stream(request, job, rid, created)
        else:
            outcome = await self.engine.generate(job, None)
            resp = _json_response(_completion_body(job, outcome, rid, created))
        if self.cfg.log_requests and outcome is not None:
            ms = (time.monotonic() - started) * 1000
            _say(
                f"request {rid} model={job.model} stream={job.stream} prompt_tokens={job.prompt_tokens} "
                f"completion_tokens={outcome.completion_tokens} finish={outcome.finish} ms={ms:.1f}",
                flush=False,
            )
        return resp

    async def _stream(
        self, request: web.Request, job: Job, rid: str, created: int
    ) -> tuple[web.StreamResponse, Outcome | None]:
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        sse = Sse(resp, job, rid, created)
        try:
            if job.chat:
                await sse.send_choice(_delta({"role": "assistant", "content": ""}))
            outcome = await self.engine.generate(job, sse)
            if job.chat:
                last = _delta({}, outcome.finish)
            else:
                last = {"index": 0, "text": "", "logprobs": None, "finish_reason": outcome.finish}
            await sse.send_choice(last)
            if job.include_usage:
                usage = _dumps(_usage(job, outcome))
                await sse.send(sse.base + b'[],"usage":' + usage + b"}\n\n")
            await sse.send(_DONE)
            await resp.write_eof()
        except ConnectionError:
            # The client hung up between writes: routine for streams, not worth a traceback.
            return resp, None
        return resp, outcome


# --------------------------------------------------------------------------------------------
# Process lifetime


def _say(message: str, *, flush: bool = True) -> None:
    try:
        sys.stdout.write(f"sparkctl-emulate: {message}\n")
        if flush:
            sys.stdout.flush()
    except (OSError, ValueError):
        pass  # nobody is listening any more; the emulator's job is unaffected


def _seconds_since_exec() -> float:
    """Age of this process from /proc (field 22 of stat is its start, in clock ticks since boot)."""
    try:
        stat = Path("/proc/self/stat").read_bytes()
        # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
        start_ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _MODULE_LOADED  # no procfs: the best lower bound there is


def _allocate(megabytes: int) -> mmap.mmap | None:
    """N MiB that are really resident: every page is written, so the kernel must back it."""
    if megabytes <= 0:
        return None
    size = megabytes << 20
    ballast = mmap.mmap(-1, size)
    ballast[::_PAGE] = b"\x01" * (size // _PAGE)
    return ballast


def _crash(code: int) -> None:
    _say(f"crashing exit_code={code}")
    os._exit(code)  # abrupt on purpose: no cleanup, in-flight streams are cut


async def _load(cfg: Config, stop: asyncio.Event) -> mmap.mmap | None:
    """Stand for model loading (cut short by `stop`); returns the ballast."""
    _say(f"loading model={cfg.model} load_time={cfg.load_time:g}s memory_mb={cfg.memory_mb}")
    began = time.monotonic()
    ballast = _allocate(cfg.memory_mb)
    remaining = cfg.load_time - (time.monotonic() - began)
    if remaining > 0:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await stop.wait()
    return ballast


def _arm_timers(cfg: Config, server: Server) -> None:
    loop = asyncio.get_running_loop()
    if cfg.unhealthy_after is not None:
        loop.call_later(max(0.0, cfg.unhealthy_after), setattr, server, "healthy", False)
    if cfg.crash_after is not None:
        loop.call_later(max(0.0, cfg.crash_after), _crash, cfg.exit_code)


async def serve(cfg: Config) -> int:
    """Load, bind, announce readiness, serve until SIGTERM/SIGINT; returns the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = Server(cfg)
    # Like vLLM, nothing listens while the model loads: clients see connection refused.
    server.ballast = await _load(cfg, stop)
    if stop.is_set():
        _say("stopped while loading")
        return 0
    # handler_cancellation: a client that hangs up cancels its generation at once.
    runner = web.AppRunner(
        server.app(), access_log=None, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_GRACE_S
    )
    await runner.setup()
    # A deep backlog: benchmarks open hundreds of connections at once.
    site = web.TCPSite(runner, cfg.host or None, cfg.port, reuse_address=True, backlog=4096)
    try:
        await site.start()
    except OSError as exc:
        print(f"sparkctl-emulate: cannot listen on {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
        await runner.cleanup()
        return 1
    port = runner.addresses[0][1] if runner.addresses else cfg.port
    exec_to_ready_ms = _seconds_since_exec() * 1000
    _arm_timers(cfg, server)
    _say(
        f"ready exec_to_ready_ms={exec_to_ready_ms:.1f} ready_unix={time.time():.6f} port={port} "
        f"model={cfg.served_names[0]}"
    )
    await stop.wait()
    _say("stopping")
    # Bounded: open streams are cut regardless, and exiting promptly is what matters.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(runner.cleanup(), timeout=0.5)
    return 0


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(sys.argv[1:] if argv is None else list(argv))
    _raise_fd_limit()
    return asyncio.run(serve(cfg))


def _raise_fd_limit() -> None:
    """Open files up to the hard limit, as vLLM does at start: a unit's default soft limit of
    1024 makes accept() fail past about a thousand connections."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    raise SystemExit(main())

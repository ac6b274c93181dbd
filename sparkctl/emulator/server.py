"""The routes of vLLM's OpenAI-compatible server (health, version, metrics, models, chat and text
completions, embeddings), answered by an Engine, with vLLM's optional API-key check on /v1.

Handlers turn each ApiError from reading a request into vLLM's error body; a client that hangs up
mid-stream ends its response quietly (the Engine has already counted the abort).
"""

from __future__ import annotations

import hmac
import mmap
import secrets
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sparkctl.emulator.config import Config
from sparkctl.emulator.generation import Engine, Sse
from sparkctl.emulator.log import say
from sparkctl.emulator.metrics import render_metrics
from sparkctl.emulator.protocol import (
    DEFAULT_MAX_TOKENS,
    JSON_TYPE,
    ApiError,
    Job,
    ToolCall,
    bad,
    chat_prompt,
    completion_prompt,
    dumps,
    embedding_inputs,
    flag,
    include_usage,
    json_response,
    pick_tool,
    read_json,
    requested_max_tokens,
    stop_sequences,
)
from sparkctl.emulator.responses import Outcome, completion_body, delta_choice, embedding, usage

VERSION = "0.0.0+sparkctl.emulator"

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DONE = b"data: [DONE]\n\n"


def _auth_middleware(api_key: str) -> Middleware:
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Like vLLM: only /v1 is guarded, and CORS preflights pass.
        if request.method != "OPTIONS" and request.path.startswith("/v1"):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return json_response({"error": "Unauthorized"}, 401)
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
        self._models_body = dumps({"object": "list", "data": entries})

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
        return json_response({"version": VERSION})

    async def metrics(self, request: web.Request) -> web.Response:
        text = render_metrics(self.engine.stats, self.cfg.served_names[0])
        return web.Response(body=text.encode(), headers={"Content-Type": _METRICS_TYPE})

    async def models(self, request: web.Request) -> web.Response:
        return web.Response(body=self._models_body, content_type=JSON_TYPE)

    def _model(self, body: dict[str, Any]) -> str:
        name = body.get("model")
        if name is None:
            return self.cfg.served_names[0]
        if not isinstance(name, str):
            raise bad("`model` must be a string.")
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
        requested = requested_max_tokens(body)
        max_tokens = DEFAULT_MAX_TOKENS if requested is None else requested
        limit = self.cfg.max_model_len
        if prompt_tokens + max_tokens > limit:
            raise bad(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in "
                "the completion). Please reduce the length of the messages or completion."
            )
        stream = flag(body, "stream")
        return Job(
            chat=chat,
            model=model,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            natural_end=requested is None,
            stream=stream,
            include_usage=stream and include_usage(body),
            stop=stop_sequences(body),
            tool=tool,
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json(request)
            model = self._model(body)  # an unknown model is a 404 before anything else is judged
            prompt_tokens, last_role = chat_prompt(body.get("messages"))
            job = self._job(body, model, prompt_tokens, chat=True, tool=pick_tool(body, last_role))
        except ApiError as exc:
            return exc.response()
        return await self._serve(request, job)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json(request)
            model = self._model(body)
            if "prompt" not in body:
                raise bad("`prompt` is required.")
            job = self._job(body, model, completion_prompt(body["prompt"]), chat=False)
        except ApiError as exc:
            return exc.response()
        return await self._serve(request, job)

    async def embeddings(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
            model = self._model(body)
            inputs = embedding_inputs(body.get("input"))
            encoding = body.get("encoding_format") or "float"
            if encoding not in ("float", "base64"):
                raise bad("`encoding_format` must be 'float' or 'base64'.")
        except ApiError as exc:
            return exc.response()
        tokens = sum(n for _, n in inputs)
        self.engine.stats.prompt_tokens += tokens
        data = [
            {"object": "embedding", "index": i, "embedding": embedding(text, encoding == "base64")}
            for i, (text, _) in enumerate(inputs)
        ]
        counts = {"prompt_tokens": tokens, "total_tokens": tokens}
        return json_response({"object": "list", "data": data, "model": model, "usage": counts})

    async def _serve(self, request: web.Request, job: Job) -> web.StreamResponse:
        rid = ("chatcmpl-" if job.chat else "cmpl-") + secrets.token_hex(16)
        created = int(time.time())
        started = time.monotonic()
        outcome: Outcome | None
        if job.stream:
            resp, outcome = await self._stream(request, job, rid, created)
        else:
            outcome = await self.engine.generate(job, None)
            resp = json_response(completion_body(job, outcome, rid, created))
        if self.cfg.log_requests and outcome is not None:
            ms = (time.monotonic() - started) * 1000
            say(
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
                await sse.send_choice(delta_choice({"role": "assistant", "content": ""}))
            outcome = await self.engine.generate(job, sse)
            if job.chat:
                last = delta_choice({}, outcome.finish)
            else:
                last = {"index": 0, "text": "", "logprobs": None, "finish_reason": outcome.finish}
            await sse.send_choice(last)
            if job.include_usage:
                counts = dumps(usage(job, outcome))
                await sse.send(sse.base + b'[],"usage":' + counts + b"}\n\n")
            await sse.send(_DONE)
            await resp.write_eof()
        except ConnectionError:
            # The client hung up between writes: routine for streams, not worth a traceback.
            return resp, None
        return resp, outcome

"""The routes of vLLM's OpenAI-compatible server (health, version, metrics, models, chat and text
completions, embeddings, the Responses and Anthropic Messages APIs, tokenize and detokenize),
answered by an Engine, with vLLM's optional API-key check on /v1.

A request is read whole before it is judged, as vLLM's pydantic models read it: a malformed body
is a validation error even when it names an unknown model; then the model (404), then the
limits. A client that hangs up mid-stream ends its response quietly (the Engine has already
counted the abort).
"""

from __future__ import annotations

import hmac
import mmap
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sparkctl.emulator import anthropic, responses_api
from sparkctl.emulator.config import Config
from sparkctl.emulator.generation import ChatStream, Engine, Stream
from sparkctl.emulator.log import say
from sparkctl.emulator.metrics import render_metrics
from sparkctl.emulator.protocol import (
    Job,
    Sampling,
    chat_prompt,
    chat_tool,
    completion_prompt,
    context_cap,
    embedding_inputs,
    include_usage,
    openai_sampling,
    positive,
    reply_length,
)
from sparkctl.emulator.responses import Outcome, completion_body, embedding
from sparkctl.emulator.tokenization import detokenize, tokenize
from sparkctl.emulator.tokens import Prompt, Vocabulary
from sparkctl.emulator.tools import ToolCall
from sparkctl.emulator.wire import (
    JSON_TYPE,
    ApiError,
    dumps,
    flag,
    invalid,
    json_response,
    not_found,
    opt_str,
    read_json,
    value_error,
)

VERSION = "0.0.0+sparkctl.emulator"

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _auth_middleware(api_key: str) -> Middleware:
    expected = f"Bearer {api_key}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Like vLLM (0.26 included): only /v1 is guarded, CORS preflights pass, and the key is read
        # from `Authorization: Bearer` alone — an Anthropic client's `x-api-key` is refused
        # (vllm-project/vllm#51572); /tokenize and /detokenize are open.
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
        self.vocab = Vocabulary()
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
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_get("/v1/responses/{response_id}", self.stored_response)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/detokenize", self.detokenize)
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

    def _model(self, name: str | None) -> str:
        if name is None:
            return self.cfg.served_names[0]
        if name not in self.accepted_models:
            raise not_found(f"The model `{name}` does not exist.")
        return name

    def _job(
        self, model: str, prompt: Prompt, sampling: Sampling, cap: int, tool: ToolCall | None, *,
        chat: bool = True, stream: bool = False, usage: bool = False,
    ) -> Job:  # fmt: skip
        return Job(
            chat=chat,
            model=model,
            prompt_tokens=prompt.tokens,
            max_tokens=cap,
            length=reply_length(prompt, sampling, cap, self.cfg.seed),
            stream=stream,
            include_usage=usage,
            stop=sampling.stop,
            tool=tool,
        )

    def _openai_job(self, body: dict[str, Any], prompt: Prompt, tool: ToolCall | None, *, chat: bool) -> Job:
        name = opt_str(body, "model")
        sampling = openai_sampling(body, chat=chat)
        stream = flag(body, "stream")
        if body.get("stream_options") and not stream:
            raise value_error("Stream options can only be defined when `stream=True`.", body)
        usage = stream and include_usage(body)
        model = self._model(name)
        cap = context_cap(prompt.tokens, positive(sampling.max_tokens), self.cfg.max_model_len)
        return self._job(model, prompt, sampling, cap, tool, chat=chat, stream=stream, usage=usage)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json(request)
            prompt, last_user = chat_prompt(body)
            job = self._openai_job(body, prompt, chat_tool(body, last_user), chat=True)
        except ApiError as exc:
            return exc.response()
        return await self._openai_serve(request, job, "chatcmpl-")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json(request)
            job = self._openai_job(body, completion_prompt(body), None, chat=False)
        except ApiError as exc:
            return exc.response()
        return await self._openai_serve(request, job, "cmpl-")

    async def _openai_serve(self, request: web.Request, job: Job, prefix: str) -> web.StreamResponse:
        rid = prefix + secrets.token_hex(16)
        created = int(time.time())
        return await self._serve(
            request,
            job,
            rid,
            lambda resp: ChatStream(resp, job, rid, created),
            lambda outcome: completion_body(job, outcome, rid, created),
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
            inputs = embedding_inputs(body)
            encoding = body.get("encoding_format") or "float"
            if encoding not in ("float", "base64"):
                msg = "Input should be 'float' or 'base64'"
                raise invalid(("encoding_format",), "literal_error", msg, encoding)
            model = self._model(opt_str(body, "model"))
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

    async def responses(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json(request)
            req = responses_api.read(body)
            model = self._model(req.model)
            if previous := req.echo["previous_response_id"]:
                raise responses_api.not_stored(previous)  # vLLM kept nothing to continue from
            requested = positive(req.sampling.max_tokens, "max_output_tokens")
            cap = responses_api.context_cap(req.prompt.tokens, requested, self.cfg.max_model_len)
            job = self._job(model, req.prompt, req.sampling, cap, req.tool, stream=req.stream)
        except ApiError as exc:
            return exc.response()
        reply = responses_api.Reply(req, model, job.prompt_tokens, cap)
        return await self._serve(
            request, job, reply.id, lambda resp: responses_api.ResponsesStream(resp, reply), reply.body
        )

    async def stored_response(self, request: web.Request) -> web.Response:
        return responses_api.not_stored(request.match_info["response_id"]).response()

    async def messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json(request)
            req = anthropic.read(body)
            model = self._model(req.model)
            cap = context_cap(req.prompt.tokens, req.sampling.max_tokens, self.cfg.max_model_len)
            job = self._job(model, req.prompt, req.sampling, cap, req.tool, stream=req.stream)
        except ApiError as exc:
            return anthropic.error_response(exc)
        mid = "msg_" + secrets.token_hex(12)
        return await self._serve(
            request,
            job,
            mid,
            lambda resp: anthropic.MessagesStream(resp, mid, model, job.prompt_tokens),
            lambda outcome: anthropic.message_body(mid, model, job.prompt_tokens, outcome),
        )

    async def count_tokens(self, request: web.Request) -> web.Response:
        try:
            req = anthropic.read(await read_json(request), counting=True)
            self._model(req.model)
        except ApiError as exc:
            return anthropic.error_response(exc)
        return json_response(anthropic.count_body(req.prompt.tokens))

    async def tokenize(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
            self._model(opt_str(body, "model"))
            return json_response(tokenize(body, self.vocab, self.cfg.max_model_len))
        except ApiError as exc:
            return exc.response()

    async def detokenize(self, request: web.Request) -> web.Response:
        try:
            body = await read_json(request)
            self._model(opt_str(body, "model"))
            return json_response(detokenize(body, self.vocab))
        except ApiError as exc:
            return exc.response()

    async def _serve(
        self,
        request: web.Request,
        job: Job,
        rid: str,
        stream_of: Callable[[web.StreamResponse], Stream],
        body_of: Callable[[Outcome], dict[str, Any]],
    ) -> web.StreamResponse:
        """Runs a job: streamed through the route's Stream, or answered whole with its body."""
        started = time.monotonic()
        outcome: Outcome | None
        if job.stream:
            resp = web.StreamResponse(headers=_SSE_HEADERS)
            await resp.prepare(request)
            outcome = await self._stream(resp, job, stream_of(resp))
        else:
            outcome = await self.engine.generate(job, None)
            resp = json_response(body_of(outcome))
        if self.cfg.log_requests and outcome is not None:
            ms = (time.monotonic() - started) * 1000
            say(
                f"request {rid} model={job.model} stream={job.stream} prompt_tokens={job.prompt_tokens} "
                f"completion_tokens={outcome.completion_tokens} finish={outcome.finish} ms={ms:.1f}",
                flush=False,
            )
        return resp

    async def _stream(self, resp: web.StreamResponse, job: Job, stream: Stream) -> Outcome | None:
        try:
            await stream.begin()
            outcome = await self.engine.generate(job, stream)
            await stream.end(outcome)
            await resp.write_eof()
        except ConnectionError:
            # The client hung up between writes: routine for streams, not worth a traceback.
            return None
        return outcome

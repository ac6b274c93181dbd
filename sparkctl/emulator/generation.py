"""Producing tokens over time: the Engine runs a Job to its Outcome, paced at the configured
tokens per second (or as fast as it can), buffering the text or handing each token to a Stream.

Each route frames a streamed reply its own way (a Stream: chat and text completion chunks here,
Responses and Messages events in their modules). The Engine keeps the Stats /metrics reports,
and counts a generation whose client went away (its handler cancelled, or a write failed) as an
abort.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Protocol

from aiohttp import web

from sparkctl.emulator.config import Config
from sparkctl.emulator.metrics import Stats
from sparkctl.emulator.protocol import Job
from sparkctl.emulator.responses import Outcome, delta_choice, usage
from sparkctl.emulator.tokens import TOKENS, TOKENS_JSON
from sparkctl.emulator.tools import ToolCall
from sparkctl.emulator.wire import dumps

_ARG_PIECE = 8  # characters of tool-call arguments per streamed chunk (one "token" each)
_YIELD_EVERY = 64  # unpaced generation still lets other connections in this often
_OPEN = b'"logprobs":null,"finish_reason":null}]}\n\n'
_DONE = b"data: [DONE]\n\n"


class Stream(Protocol):
    """A streamed reply on its way to the client, in one route's framing."""

    async def begin(self) -> None: ...

    async def text(self, k: int) -> None:
        """The reply's next token, TOKENS[k]."""

    async def tool_start(self, call: ToolCall) -> None: ...

    async def tool_args(self, piece: str) -> None: ...

    async def end(self, outcome: Outcome) -> None: ...


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


class ChatStream:
    """Chat and text completion chunks (`data: {…}` lines, then `data: [DONE]`)."""

    __slots__ = ("base", "job", "resp", "tokens")

    def __init__(self, resp: web.StreamResponse, job: Job, rid: str, created: int) -> None:
        obj = "chat.completion.chunk" if job.chat else "text_completion"
        model = json.dumps(job.model)
        self.resp = resp
        self.job = job
        # Everything up to the choices array; a chunk is base + choices + "}\n\n".
        self.base = (
            f'data: {{"id":"{rid}","object":"{obj}","created":{created},"model":{model},"choices":'.encode()
        )
        head = self.base + b'[{"index":0,' + (b'"delta":{"content":' if job.chat else b'"text":')
        tail = (b"}," if job.chat else b",") + _OPEN
        # Token chunks differ only by their word: build them once per request, not once per token.
        self.tokens = [head + word.encode() + tail for word in TOKENS_JSON]

    async def _choice(self, choice: dict[str, Any]) -> None:
        await self.resp.write(self.base + dumps([choice]) + b"}\n\n")

    async def begin(self) -> None:
        if self.job.chat:
            await self._choice(delta_choice({"role": "assistant", "content": ""}))

    async def text(self, k: int) -> None:
        await self.resp.write(self.tokens[k])

    async def tool_start(self, call: ToolCall) -> None:
        header = {"index": 0, "id": call.call_id, "type": "function"}
        header["function"] = {"name": call.name, "arguments": ""}
        await self._choice(delta_choice({"tool_calls": [header]}))

    async def tool_args(self, piece: str) -> None:
        await self._choice(delta_choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))

    async def end(self, outcome: Outcome) -> None:
        if self.job.chat:
            await self._choice(delta_choice({}, outcome.finish))
        else:
            await self._choice({"index": 0, "text": "", "logprobs": None, "finish_reason": outcome.finish})
        if self.job.include_usage:
            await self.resp.write(self.base + b'[],"usage":' + dumps(usage(self.job, outcome)) + b"}\n\n")
        await self.resp.write(_DONE)


class Engine:
    """Generates tokens for jobs and keeps the counters /metrics reports."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stats = Stats()

    async def generate(self, job: Job, stream: Stream | None) -> Outcome:
        stats = self.stats
        stats.running += 1
        stats.prompt_tokens += job.prompt_tokens
        try:
            outcome = await (self._tool(job.tool, stream) if job.tool else self._text(job, stream))
        except BaseException:
            # Client gone (cancelled handler or failed write), or shutdown: vLLM counts an abort.
            stats.finished["abort"] += 1
            raise
        finally:
            stats.running -= 1
        stats.finished["length" if outcome.finish == "length" else "stop"] += 1
        return outcome

    async def _text(self, job: Job, stream: Stream | None) -> Outcome:
        pacer = Pacer(self.cfg.tokens_per_second)
        stats = self.stats
        stops = job.stop
        words: list[str] = []
        # The model stops by itself (EOS) before the cap, or the cap cuts it.
        finish = "stop" if job.length < job.max_tokens else "length"
        matched: str | None = None
        count = 0
        for i in range(min(job.length, job.max_tokens)):
            await pacer.tick()
            k = i % len(TOKENS)
            if stops and (matched := next((s for s in stops if s in TOKENS[k]), None)):
                finish = "stop"
                break
            if stream is None:
                words.append(TOKENS[k])
            else:
                await stream.text(k)
            count += 1
            stats.generation_tokens += 1
        return Outcome("".join(words), None, count, finish, matched)

    async def _tool(self, tool: ToolCall, stream: Stream | None) -> Outcome:
        args = tool.arguments
        pieces = [args[i : i + _ARG_PIECE] for i in range(0, len(args), _ARG_PIECE)]
        pacer = Pacer(self.cfg.tokens_per_second)
        await pacer.tick()
        if stream is not None:
            await stream.tool_start(tool)
        self.stats.generation_tokens += 1
        for piece in pieces:
            await pacer.tick()
            if stream is not None:
                await stream.tool_args(piece)
            self.stats.generation_tokens += 1
        return Outcome("", tool, 1 + len(pieces), "tool_calls")

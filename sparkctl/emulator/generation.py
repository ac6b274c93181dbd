"""Producing tokens over time: the Engine runs a Job to its Outcome, paced at the configured
tokens per second (or as fast as it can), buffering the text or writing it as SSE chunks.

Generated text cycles through the words of lorem ipsum, one word (plus a space) per token, so a
test can predict any reply exactly. The Engine keeps the Stats /metrics reports, and counts a
generation whose client went away (its handler cancelled, or a write failed) as an abort.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from aiohttp import web

from sparkctl.emulator.config import Config
from sparkctl.emulator.metrics import Stats
from sparkctl.emulator.protocol import Job, ToolCall, dumps
from sparkctl.emulator.responses import Outcome, delta_choice

_ARG_PIECE = 8  # characters of tool-call arguments per streamed chunk (one "token" each)
_YIELD_EVERY = 64  # unpaced generation still lets other connections in this often

# Generated text cycles through these words; each token is a word plus a space.
_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris "
    "nisi aliquip ex ea commodo consequat"
)
_TOKENS = tuple(w + " " for w in _LOREM.split())
_TOKENS_JSON = tuple(json.dumps(t).encode() for t in _TOKENS)
_OPEN = b'"logprobs":null,"finish_reason":null}]}\n\n'


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
        await self.resp.write(self.base + dumps([choice]) + b"}\n\n")


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
            await sse.send_choice(delta_choice({"tool_calls": [header]}))
        self.stats.generation_tokens += 1
        for piece in pieces:
            await pacer.tick()
            if sse is not None:
                await sse.send_choice(
                    delta_choice({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                )
            self.stats.generation_tokens += 1
        return Outcome("", (call_id, tool), 1 + len(pieces), "tool_calls")

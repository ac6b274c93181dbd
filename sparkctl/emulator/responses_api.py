"""POST /v1/responses as vLLM serves the OpenAI Responses API (its non-Harmony path): the request
read into a Job, the `response` object, and the streamed event sequence.

vLLM keeps no responses by default (VLLM_ENABLE_RESPONSES_API_STORE is off), so `store` is
accepted and ignored and GET /v1/responses/{id} answers 404. Unlike chat, an oversized
`max_output_tokens` is clamped to what the context leaves; only a prompt that fills the context
is refused. The reply's items keep one id from `output_item.added` to `response.completed`, so
the SDK's stream accumulator can match them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sparkctl.emulator.protocol import NO_SUCH_TOOL, Sampling, content_texts
from sparkctl.emulator.responses import Outcome
from sparkctl.emulator.tokens import Prompt, reply_text, token_text
from sparkctl.emulator.tools import Choice, Function, Named, ToolCall, decide
from sparkctl.emulator.wire import (
    ApiError,
    Loc,
    as_dict,
    bad,
    flag,
    invalid,
    missing,
    opt_bool,
    opt_dict,
    opt_float,
    opt_int,
    opt_list,
    opt_str,
    req_str,
    sse_event,
    str_list,
)

_MESSAGE_ROLES = ("user", "assistant", "system", "developer")
_ITEM_TYPES = ("message", "function_call", "function_call_output", "reasoning", "item_reference")


@dataclass(frozen=True, slots=True)
class Request:
    """A Responses request, validated; `echo` holds what the response object repeats back."""

    model: str | None
    prompt: Prompt
    sampling: Sampling
    tool: ToolCall | None
    stream: bool
    echo: dict[str, Any]


def read(body: dict[str, Any]) -> Request:
    prompt = Prompt()
    instructions = opt_str(body, "instructions")
    if instructions:
        prompt.add(instructions)
    if "input" not in body:
        raise missing(body, ("input",))
    last_user = _read_input(body["input"], prompt)
    functions, tools = _read_tools(body)
    choice = _read_choice(body, functions)
    sampling = Sampling(
        max_tokens=opt_int(body, "max_output_tokens"),
        ignore_eos=flag(body, "ignore_eos"),
        seed=opt_int(body, "seed"),
        stop=tuple(s for s in str_list(body, "stop") if s),
    )
    temperature = opt_float(body, "temperature")
    top_p = opt_float(body, "top_p")
    echo = {
        "instructions": instructions,
        "metadata": opt_dict(body, "metadata"),
        "parallel_tool_calls": opt_bool(body, "parallel_tool_calls") is not False,
        "temperature": 1.0 if temperature is None else temperature,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools,
        "top_p": 1.0 if top_p is None else top_p,
        "previous_response_id": opt_str(body, "previous_response_id"),
        "reasoning": opt_dict(body, "reasoning"),
        "text": opt_dict(body, "text"),
        "user": opt_str(body, "user"),
    }
    tool = decide(functions, choice, last_user)
    return Request(opt_str(body, "model"), prompt, sampling, tool, flag(body, "stream"), echo)


def _read_input(value: Any, prompt: Prompt) -> str | None:
    """Adds the input to the prompt; returns the last item's text if it is a user message."""
    if isinstance(value, str):
        prompt.add(value)
        return value
    if not isinstance(value, list):
        raise invalid(("input",), "string_type", "Input should be a valid string", value)
    last_user: str | None = None
    for i, raw in enumerate(value):
        item = as_dict(raw, ("input", i))
        kind = item.get("type", "message")
        if kind not in _ITEM_TYPES:
            msg = f"Input tag '{kind}' found using 'type' does not match any of the expected tags"
            raise invalid(("input", i), "union_tag_invalid", msg, item)
        last_user = None
        if kind == "message":
            role = req_str(item, "role", ("input", i))
            if role not in _MESSAGE_ROLES:
                msg = "Input should be 'user', 'assistant', 'system' or 'developer'"
                raise invalid(("input", i, "role"), "literal_error", msg, role)
            texts = _texts(item.get("content"), ("input", i, "content"))
            for text in texts:
                prompt.add(text)
            last_user = " ".join(texts) if role == "user" else None
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                req_str(item, key, ("input", i))
        elif kind == "function_call_output":
            req_str(item, "call_id", ("input", i))
            for text in _texts(item.get("output"), ("input", i, "output")):
                prompt.add(text)
    return last_user


def _texts(content: Any, loc: Loc) -> list[str]:
    if content is None:  # (an input item's content is required, unlike a chat message's)
        raise invalid(loc, "string_type", "Input should be a valid string", content)
    return content_texts(content, loc)


def _read_tools(body: dict[str, Any]) -> tuple[list[Function], list[dict[str, Any]]]:
    """The function tools (the flat Responses shape), and every tool as the response echoes it."""
    functions: list[Function] = []
    echoed: list[dict[str, Any]] = []
    for i, raw in enumerate(opt_list(body, "tools") or []):
        tool = as_dict(raw, ("tools", i))
        kind = req_str(tool, "type", ("tools", i))
        if kind == "function":
            name = req_str(tool, "name", ("tools", i))
            functions.append(Function(name, tool.get("parameters")))
            tool = {
                "name": name,
                "parameters": tool.get("parameters"),
                "strict": tool.get("strict"),
                "type": "function",
                "description": tool.get("description"),
            }
        echoed.append(tool)
    return functions, echoed


def _read_choice(body: dict[str, Any], functions: list[Function]) -> Choice:
    choice = body.get("tool_choice", "auto")
    if choice in ("none", "auto", "required"):
        return "none" if choice == "required" and not functions else choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = req_str(choice, "name", ("tool_choice",))
        if not any(fn.name == name for fn in functions):
            raise bad(NO_SUCH_TOOL)
        return Named(name)
    if isinstance(choice, dict):
        return "auto"  # a hosted tool (web search, MCP…): nothing here to call, so prose
    msg = "Input should be 'none', 'auto' or 'required'"
    raise invalid(("tool_choice",), "literal_error", msg, choice)


def context_cap(prompt_tokens: int, requested: int | None, limit: int) -> int:
    if prompt_tokens >= limit:
        raise ApiError(
            400,
            "invalid_request_error",
            f"The engine prompt length {prompt_tokens} exceeds the max_model_len {limit}. "
            "Please reduce prompt.",
            "input",
        )
    room = limit - prompt_tokens
    return room if requested is None else min(requested, room)


class Reply:
    """One response: its ids, and the `response` object at each stage of its life."""

    def __init__(self, request: Request, model: str, prompt_tokens: int, cap: int) -> None:
        self.id = "resp_" + secrets.token_hex(16)
        self.message_id = "msg_" + secrets.token_hex(16)
        self.call_item_id = "fc_" + secrets.token_hex(16)
        self.created = int(time.time())
        self.request = request
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.cap = cap

    def body(self, outcome: Outcome | None) -> dict[str, Any]:
        """The response object; in progress (no output yet) while outcome is None."""
        incomplete = outcome is not None and outcome.finish == "length"
        status = "in_progress" if outcome is None else "incomplete" if incomplete else "completed"
        return {
            "id": self.id,
            "created_at": self.created,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            **self.request.echo,
            "model": self.model,
            "object": "response",
            "output": [] if outcome is None else self.output(outcome),
            "background": False,
            "max_output_tokens": self.cap,
            "max_tool_calls": None,
            "prompt": None,
            "service_tier": "auto",
            "status": status,
            "top_logprobs": None,
            "truncation": "disabled",
            "usage": None if outcome is None else self._usage(outcome),
            "input_messages": None,
            "output_messages": None,
        }

    def output(self, outcome: Outcome) -> list[dict[str, Any]]:
        if outcome.call is not None:
            return [self.call_item(outcome.call, outcome.call.arguments, "completed")]
        text = outcome.text or reply_text(outcome.completion_tokens)
        content = [_text_part(text)] if text else []  # vLLM sends no part for an empty reply
        return [self.message_item(content, "completed")]

    def message_item(self, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "content": content,
            "role": "assistant",
            "status": status,
            "type": "message",
        }

    def call_item(self, call: ToolCall, arguments: str, status: str) -> dict[str, Any]:
        return {
            "arguments": arguments,
            "call_id": call.call_id,
            "name": call.name,
            "type": "function_call",
            "id": self.call_item_id,
            "status": status,
        }

    def _usage(self, outcome: Outcome) -> dict[str, Any]:
        out = outcome.completion_tokens
        return {
            "input_tokens": self.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": 0, "tool_output_tokens": 0},
            "total_tokens": self.prompt_tokens + out,
        }


def _text_part(text: str) -> dict[str, Any]:
    return {"annotations": [], "text": text, "type": "output_text", "logprobs": None}


class ResponsesStream:
    """The Responses event sequence, each event an SSE `event:` + `data:` pair numbered by
    `sequence_number`."""

    def __init__(self, resp: web.StreamResponse, reply: Reply) -> None:
        self.resp = resp
        self.reply = reply
        self.seq = 0
        self.opened = False  # the message item is added with the first token

    async def _emit(self, kind: str, **fields: Any) -> None:
        await self.resp.write(sse_event(kind, {"type": kind, "sequence_number": self.seq, **fields}))
        self.seq += 1

    async def begin(self) -> None:
        initial = self.reply.body(None)
        await self._emit("response.created", response=initial)
        await self._emit("response.in_progress", response=initial)

    async def text(self, k: int) -> None:
        where = {"output_index": 0, "item_id": self.reply.message_id}
        if not self.opened:
            self.opened = True
            await self._emit(
                "response.output_item.added", output_index=0, item=self.reply.message_item([], "in_progress")
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            await self._emit("response.content_part.added", **where, content_index=0, part=part)
        await self._emit(
            "response.output_text.delta", **where, content_index=0, delta=token_text(k), logprobs=[]
        )

    async def tool_start(self, call: ToolCall) -> None:
        await self._emit(
            "response.output_item.added", output_index=0, item=self.reply.call_item(call, "", "in_progress")
        )

    async def tool_args(self, piece: str) -> None:
        await self._emit(
            "response.function_call_arguments.delta",
            output_index=0,
            item_id=self.reply.call_item_id,
            delta=piece,
        )

    async def end(self, outcome: Outcome) -> None:
        reply = self.reply
        if outcome.call is not None:
            call = outcome.call
            await self._emit(
                "response.function_call_arguments.done",
                output_index=0,
                item_id=reply.call_item_id,
                arguments=call.arguments,
                name=call.name,
            )
            await self._emit(
                "response.output_item.done",
                output_index=0,
                item=reply.call_item(call, call.arguments, "completed"),
            )
        elif self.opened:
            text = reply_text(outcome.completion_tokens)
            where = {"output_index": 0, "item_id": reply.message_id, "content_index": 0}
            await self._emit("response.output_text.done", **where, text=text, logprobs=[])
            part = {"type": "output_text", "text": text, "annotations": []}
            await self._emit("response.content_part.done", **where, part=part)
            await self._emit(
                "response.output_item.done", output_index=0, item=reply.message_item([part], "completed")
            )
        await self._emit("response.completed", response=reply.body(outcome))


def not_stored(response_id: str) -> ApiError:
    """GET /v1/responses/{id}: vLLM stores nothing unless VLLM_ENABLE_RESPONSES_API_STORE is set."""
    message = f"Response with id '{response_id}' not found."
    return ApiError(404, "invalid_request_error", message, "response_id")

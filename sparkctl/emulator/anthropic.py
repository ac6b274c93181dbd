"""POST /v1/messages (and /v1/messages/count_tokens) as vLLM serves the Anthropic Messages API.

vLLM turns a Messages request into a chat request, so the chat rules hold here too: `max_tokens`
must fit the context with the prompt, and the tool rule is the chat one (`any` is `required`).
Errors come in two shapes, as in vLLM: a body its pydantic model rejects gets the OpenAI-shaped
validation body (FastAPI's handler answers before the route does); the route's own refusals
(unknown model, context overflow) are translated to Anthropic's `{"type":"error","error":{…}}`.

Where vLLM's translation falls short of Anthropic's API, the emulator follows Anthropic, since
clients are written against it: ids are `msg_…`, a stop sequence ends with `stop_sequence`, and
the stream carries a `ping` after its first content block starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sparkctl.emulator.protocol import NO_SUCH_TOOL, Sampling
from sparkctl.emulator.responses import Outcome
from sparkctl.emulator.tokens import Prompt, token_text
from sparkctl.emulator.tools import Choice, Function, Named, ToolCall, decide
from sparkctl.emulator.wire import (
    ApiError,
    Loc,
    as_dict,
    bad,
    flag,
    invalid,
    json_response,
    missing,
    opt_dict,
    opt_float,
    opt_int,
    opt_list,
    opt_str,
    req_str,
    sse_event,
    str_list,
    value_error,
)

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "ctx": "user", "msg": "user"}
_BLOCKS = ("text", "image", "tool_use", "tool_result", "tool_reference", "thinking", "redacted_thinking")
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


@dataclass(frozen=True, slots=True)
class Request:
    model: str
    prompt: Prompt
    sampling: Sampling
    tool: ToolCall | None
    stream: bool


def read(body: dict[str, Any], *, counting: bool = False) -> Request:
    """A Messages request (a count_tokens one when `counting`: no max_tokens, no stream)."""
    model = req_str(body, "model")
    if not model:
        raise value_error("Model is required", model, ("model",))
    messages = opt_list(body, "messages")
    if messages is None:
        raise missing(body, ("messages",))
    max_tokens = None
    if not counting:
        max_tokens = opt_int(body, "max_tokens")
        if max_tokens is None:
            raise missing(body, ("max_tokens",))
        if max_tokens <= 0:
            raise value_error("max_tokens must be positive", max_tokens, ("max_tokens",))
    prompt = Prompt()
    _read_system(body.get("system"), prompt)
    last_user = _read_messages(messages, prompt)
    functions = _read_tools(body)
    choice = _read_choice(body, functions)
    for key in ("temperature", "top_p"):
        opt_float(body, key)
    opt_int(body, "top_k")
    opt_dict(body, "metadata")
    if not messages:
        raise bad("messages must contain at least one item")
    sampling = Sampling(max_tokens=max_tokens, stop=tuple(s for s in str_list(body, "stop_sequences") if s))
    tool = decide(functions, choice, last_user, prefix="toolu_")
    return Request(model, prompt, sampling, tool, not counting and flag(body, "stream"))


def _read_system(system: Any, prompt: Prompt) -> None:
    if system is None or isinstance(system, str):
        if system:
            prompt.add(system)
        return
    if not isinstance(system, list):
        raise invalid(("system",), "string_type", "Input should be a valid string", system)
    for i, raw in enumerate(system):
        block = _block(raw, ("system", i))
        if block["type"] == "text" and isinstance(block.get("text"), str):
            prompt.add(block["text"])


def _read_messages(messages: list[Any], prompt: Prompt) -> str | None:
    """Adds the messages to the prompt; returns the text of the last one if a user wrote it
    (None when it carries a tool result: a model answers those in prose)."""
    last_user: str | None = None
    for i, raw in enumerate(messages):
        message = as_dict(raw, ("messages", i))
        role = _ROLES.get(req_str(message, "role", ("messages", i)), "")
        if not role:
            msg = "Input should be 'user', 'assistant' or 'system'"
            raise invalid(("messages", i, "role"), "literal_error", msg, message["role"])
        content = message.get("content")
        texts: list[str] = []
        tool_result = False
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for j, raw_block in enumerate(content):
                block = _block(raw_block, ("messages", i, "content", j))
                if block["type"] == "text" and isinstance(block.get("text"), str):
                    texts.append(block["text"])
                elif block["type"] == "tool_result":
                    tool_result = True
                    texts.extend(_result_texts(block.get("content")))
        else:
            msg = "Input should be a valid string"
            raise invalid(("messages", i, "content"), "string_type", msg, content)
        for text in texts:
            prompt.add(text)
        if role == "system":
            continue  # vLLM folds it into the system prompt: it ends no turn
        last_user = " ".join(texts) if role == "user" and not tool_result else None
    return last_user


def _block(raw: Any, loc: Loc) -> dict[str, Any]:
    block = as_dict(raw, loc)
    kind = req_str(block, "type", loc)
    if kind not in _BLOCKS:
        msg = "Input should be " + ", ".join(f"'{b}'" for b in _BLOCKS[:-1]) + f" or '{_BLOCKS[-1]}'"
        raise invalid((*loc, "type"), "literal_error", msg, kind)
    return block


def _result_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [i["text"] for i in content if isinstance(i, dict) and isinstance(i.get("text"), str)]
    return []


def _read_tools(body: dict[str, Any]) -> list[Function]:
    functions = []
    for i, raw in enumerate(opt_list(body, "tools") or []):
        tool = as_dict(raw, ("tools", i))
        name = req_str(tool, "name", ("tools", i))
        schema = opt_dict(tool, "input_schema", ("tools", i))
        if schema is None:
            raise missing(tool, ("tools", i, "input_schema"))
        opt_str(tool, "description", ("tools", i))
        functions.append(Function(name, schema))
    return functions


def _read_choice(body: dict[str, Any], functions: list[Function]) -> Choice:
    raw = opt_dict(body, "tool_choice")
    if raw is None:
        return "auto"
    kind = req_str(raw, "type", ("tool_choice",))
    if kind not in ("auto", "any", "tool", "none"):
        msg = "Input should be 'auto', 'any', 'tool' or 'none'"
        raise invalid(("tool_choice", "type"), "literal_error", msg, kind)
    name = opt_str(raw, "name", ("tool_choice",))
    if kind == "tool":
        if not name:
            raise value_error("tool_choice.name is required when type is 'tool'", raw, ("tool_choice",))
        if not any(fn.name == name for fn in functions):
            raise bad(NO_SUCH_TOOL)
        return Named(name)
    return "required" if kind == "any" else "auto" if kind == "auto" else "none"


def error_response(exc: ApiError) -> web.Response:
    """A refusal on this route: validation errors keep vLLM's OpenAI shape (FastAPI answers them
    before the route runs), the route's own errors get Anthropic's."""
    if exc.kind == "Bad Request":
        return exc.response()
    return json_response({"type": "error", "error": {"type": exc.kind, "message": exc.message}}, exc.status)


def count_body(prompt_tokens: int) -> dict[str, Any]:
    return {"input_tokens": prompt_tokens, "context_management": {"original_input_tokens": prompt_tokens}}


def _stop(outcome: Outcome) -> tuple[str, str | None]:
    if outcome.stop_sequence is not None:
        return "stop_sequence", outcome.stop_sequence
    return _STOP_REASONS[outcome.finish], None


def message_body(mid: str, model: str, prompt_tokens: int, outcome: Outcome) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if outcome.call is not None:
        call = outcome.call
        arguments = json.loads(call.arguments)
        content.append({"type": "tool_use", "id": call.call_id, "name": call.name, "input": arguments})
    elif outcome.text:
        content.append({"type": "text", "text": outcome.text})
    reason, sequence = _stop(outcome)
    body: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": reason,
    }
    if sequence is not None:
        body["stop_sequence"] = sequence  # vLLM dumps with exclude_none: an absent value is left out
    body["usage"] = {"input_tokens": prompt_tokens, "output_tokens": outcome.completion_tokens}
    return body


class MessagesStream:
    """Anthropic's event sequence: message_start, then per content block start, deltas, stop;
    then message_delta (stop reason, usage) and message_stop."""

    def __init__(self, resp: web.StreamResponse, mid: str, model: str, prompt_tokens: int) -> None:
        self.resp = resp
        self.mid = mid
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.block_open = False
        self.pinged = False

    async def _emit(self, kind: str, **fields: Any) -> None:
        await self.resp.write(sse_event(kind, {"type": kind, **fields}))

    async def _ping(self) -> None:
        if not self.pinged:
            self.pinged = True
            await self._emit("ping")

    async def begin(self) -> None:
        message: dict[str, Any] = {
            "id": self.mid,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": self.model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0},
        }
        await self._emit("message_start", message=message)

    async def _start_block(self, block: dict[str, Any]) -> None:
        self.block_open = True
        await self._emit("content_block_start", index=0, content_block=block)
        await self._ping()

    async def text(self, k: int) -> None:
        if not self.block_open:
            await self._start_block({"type": "text", "text": ""})
        await self._emit("content_block_delta", index=0, delta={"type": "text_delta", "text": token_text(k)})

    async def tool_start(self, call: ToolCall) -> None:
        await self._start_block({"type": "tool_use", "id": call.call_id, "name": call.name, "input": {}})

    async def tool_args(self, piece: str) -> None:
        await self._emit(
            "content_block_delta", index=0, delta={"type": "input_json_delta", "partial_json": piece}
        )

    async def end(self, outcome: Outcome) -> None:
        if self.block_open:
            await self._emit("content_block_stop", index=0)
        await self._ping()
        reason, sequence = _stop(outcome)
        usage = {"input_tokens": self.prompt_tokens, "output_tokens": outcome.completion_tokens}
        await self._emit(
            "message_delta", delta={"stop_reason": reason, "stop_sequence": sequence}, usage=usage
        )
        await self._emit("message_stop")

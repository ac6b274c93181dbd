"""Reading vLLM's OpenAI requests: a body becomes a Job (with the tool call to answer with, if
any), and every malformed request becomes an ApiError carrying the error body vLLM would send.

There is no tokenizer: a prompt's tokens are its whitespace-separated words (or its token ids,
when it is given as ids). The JSON helpers here are the ones every response goes through.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import web

DEFAULT_MAX_TOKENS = 16
JSON_TYPE = "application/json"
_DUMMIES: dict[str, Any] = {"string": "x", "number": 1, "integer": 1, "boolean": True, "null": None}


class ApiError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.kind, "param": None, "code": self.status}}
        return json_response(body, self.status)


def bad(message: str) -> ApiError:
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


def chat_prompt(messages: Any) -> tuple[int, str]:
    """Prompt tokens of a chat, and the role of its last message."""
    if not isinstance(messages, list) or not messages:
        raise bad("`messages` must be a non-empty array of message objects.")
    total = 0
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad("Each message must be an object with a string `role`.")
        content = m.get("content")
        if isinstance(content, str):
            total += _words(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    raise bad("Message content parts must be objects.")
                text = part.get("text")
                if isinstance(text, str):
                    total += _words(text)
        elif content is not None:
            raise bad("Message `content` must be a string, an array of parts or null.")
    return total, messages[-1]["role"]


def completion_prompt(prompt: Any) -> int:
    if isinstance(prompt, str):
        return _words(prompt)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return sum(_words(p) for p in prompt)
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return len(prompt)  # token ids
        if all(isinstance(p, list) for p in prompt):
            return sum(len(p) for p in prompt)
    raise bad("`prompt` must be a string, an array of strings or an array of token ids.")


def requested_max_tokens(body: dict[str, Any]) -> int | None:
    # vLLM: max_completion_tokens supersedes the deprecated max_tokens.
    value = body.get("max_completion_tokens")
    if value is None:
        value = body.get("max_tokens")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad("`max_tokens` must be an integer.")
    if value < 1:
        raise bad(f"max_tokens must be at least 1, got {value}.")
    return value


def stop_sequences(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(s for s in stop if s)
    raise bad("`stop` must be a string or an array of strings.")


def flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(f"`{key}` must be a boolean.")
    return value


def include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise bad("`stream_options` must be an object.")
    return flag(options, "include_usage")


def _tool_functions(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise bad("`tools` must be an array.")
    functions = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad("Each tool must be an object with a `function` that has a string `name`.")
        functions.append(fn)
    return functions


def pick_tool(body: dict[str, Any], last_role: str) -> ToolCall | None:
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
            raise bad(f"Tool '{name}' has not been passed in `tools`.")
    elif choice == "required":
        chosen = functions[0]
    elif choice in (None, "auto"):
        # A model that just received a tool result answers in prose.
        if last_role != "user":
            return None
        chosen = functions[0]
    else:
        raise bad("`tool_choice` must be 'none', 'auto', 'required' or a named function.")
    arguments = _dummy_object(chosen.get("parameters"))
    return ToolCall(chosen["name"], dumps(arguments).decode())


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


def embedding_inputs(value: Any) -> list[tuple[str, int]]:
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
    raise bad("`input` must be a string, an array of strings or an array of token ids.")


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise bad(f"Invalid JSON in request body: {exc}") from None
    if not isinstance(body, dict):
        raise bad("The request body must be a JSON object.")
    return body


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type=JSON_TYPE)

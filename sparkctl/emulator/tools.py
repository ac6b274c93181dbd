"""Tool calling, the same on every route: which tool a reply calls, and with what arguments.

Each route reads its own tool shapes (chat's nested `function`, the Responses API's flat tools,
Anthropic's `input_schema`) into Functions and its tool choice into a Choice; `decide` applies
one rule to all of them. With `auto` (the default when tools are given) the model calls a tool
only when the last user message names it, the way a user asks for one; otherwise, and always
right after a tool result, it answers in prose. `required` and a named tool always call one.
The arguments fill every required property of the tool's schema with a plausible value.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal

_DUMMIES: dict[str, Any] = {"string": "x", "number": 1, "integer": 1, "boolean": True, "null": None}


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    parameters: Any  # a JSON schema, or anything a client sent in its place


@dataclass(frozen=True, slots=True)
class Named:
    name: str


Choice = Literal["none", "auto", "required"] | Named


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str  # a JSON document, as OpenAI transmits it


def new_call_id(prefix: str = "call_") -> str:
    return prefix + secrets.token_hex(12)


def decide(
    functions: list[Function], choice: Choice, last_user: str | None, *, prefix: str = "call_"
) -> ToolCall | None:
    """The call a reply makes, or None for prose. `last_user` is the last message's text when a
    user wrote it (None when the conversation ends with a tool result or the assistant)."""
    if not functions or choice == "none":
        return None
    if isinstance(choice, Named):
        chosen = next(fn for fn in functions if fn.name == choice.name)  # the route checked it exists
    else:
        named = _named_in(functions, last_user or "")
        if choice == "auto":
            if named is None:
                return None
            chosen = named
        else:
            chosen = named or functions[0]
    arguments = json.dumps(_dummy_object(chosen.parameters), separators=(",", ":"))
    return ToolCall(new_call_id(prefix), chosen.name, arguments)


def _named_in(functions: list[Function], text: str) -> Function | None:
    """The tool whose name the text mentions first (as a whole word: `get_time` is not named by
    `get_timezone`)."""
    best: tuple[int, Function] | None = None
    for fn in functions:
        match = re.search(rf"(?<![\w-]){re.escape(fn.name)}(?![\w-])", text)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), fn)
    return best[1] if best else None


def _dummy_object(schema: Any) -> dict[str, Any]:
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

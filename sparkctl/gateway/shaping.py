"""Request shaping: a model's `request.*` catalog keys applied to a client's JSON body (BRIEF §4.1).

Order: strip, then the thinking switch (chat only, gateway/thinking.py), then defaults, then
overrides, then the rules (`force_tool_choice`, `text_only`); only on JSON bodies of chat,
completions and responses (`SHAPED_ROUTES`).

Pure functions, no I/O. The reference stack did these rewrites in JavaScript with defects that are
deliberately not repeated here (seed inventory §3.2, §12 items 18–20):

* nothing is ever stringified: non-text content parts are dropped or left alone, never turned into
  "[object Object]";
* messages are never merged, removed or reordered, and `tool_call_id` / `tool_calls` are never
  touched, so parallel tool results keep their ids;
* only `SHAPED_ROUTES` are shaped (no rewriting of embeddings and the like);
* there is no catch-all: the code is written not to raise on any JSON value, and a bug would surface
  as an error rather than as the unmodified body being forwarded silently.

Contract of `shape`: the input is never mutated. When nothing changes (route not shaped, rules
inactive, or the rules are already satisfied by the body) the input object itself is returned, so a
caller can test `shaped is body` and forward the original bytes. Otherwise the result is a new dict;
its top level is fresh (setting a top-level key on it does not touch `body`), every object on a
changed path is a new copy, values taken from the rules are deep copies (the catalog's tables are
never aliased into a body), and unchanged nested objects are shared with `body`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from sparkctl.catalog.spec import RequestShaping
from sparkctl.gateway import thinking

SHAPED_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})
THINKING_ROUTE = "/v1/chat/completions"

# Content parts that count as text for `text_only` (chat: "text"; responses API: "input_text",
# "output_text"). Bare strings in a content array count as text too.
_TEXT_PART_TYPES = ("text", "input_text", "output_text")
# Chat history roles that carry a tool result ("function" is the legacy functions API).
_TOOL_RESULT_ROLES = ("tool", "function")
# `tool_choice` values that `force_tool_choice` may replace.
_FORCEABLE_TOOL_CHOICES = (None, "auto")


def shape(body: dict[str, Any], rules: RequestShaping, route: str) -> dict[str, Any]:
    """`body` shaped by `rules` for `route`; `body` itself when nothing changes (see module doc)."""
    if route not in SHAPED_ROUTES or not rules.active or not isinstance(body, dict):
        return body
    out = body
    if rules.strip:
        out = _strip(out, rules.strip)
    if route == THINKING_ROUTE:  # the switch is the chat template's
        if rules.thinking_switch:
            out = thinking.map_switch(out)
        if rules.thinking_default is not None:
            out = thinking.apply_default(out, rules.thinking_default)
    if rules.defaults:
        out = _merge_defaults(out, rules.defaults)
    if rules.overrides:
        out = _merge_overrides(out, rules.overrides)
    if rules.force_tool_choice is not None:
        out = _force_tool_choice(out, rules.force_tool_choice)
    if rules.text_only:
        out = _text_only(out)
    return out


# ---- strip, defaults, overrides ----------------------------------------------------------------


def _strip(body: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """`body` without the top-level `keys`."""
    drop = set(keys)
    if not any(key in body for key in drop):
        return body
    return {key: value for key, value in body.items() if key not in drop}


def _merge_defaults(target: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in `defaults` wherever `target` does not set the key.

    Where both sides hold a table the merge recurses. Any other value the client set wins, and a
    key present with value `null` counts as set: the client said something, so it is not replaced.
    """
    out = target
    for key, default in defaults.items():
        if key not in target:
            new = copy.deepcopy(default)
        else:
            current = target[key]
            if not (isinstance(current, dict) and isinstance(default, dict)):
                continue  # the client's value wins
            new = _merge_defaults(current, default)
            if new is current:
                continue
        if out is target:
            out = dict(target)
        out[key] = new
    return out


def _merge_overrides(target: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `overrides` over `target`: tables on both sides merge recursively, anything else is
    replaced by the override's value."""
    out = target
    for key, override in overrides.items():
        if key in target:
            current = target[key]
            if isinstance(current, dict) and isinstance(override, dict):
                new = _merge_overrides(current, override)
                if new is current:
                    continue
            elif _same_scalar(current, override):
                continue
            else:
                new = copy.deepcopy(override)
        else:
            new = copy.deepcopy(override)
        if out is target:
            out = dict(target)
        out[key] = new
    return out


def _same_scalar(a: Any, b: Any) -> bool:
    """Whether `a` and `b` are the same JSON scalar (so `1`, `1.0` and `true` differ)."""
    scalars = (str, int, float, bool, type(None))
    return type(a) is type(b) and isinstance(a, scalars) and a == b


# ---- rules ---------------------------------------------------------------------------------------


def _force_tool_choice(body: dict[str, Any], choice: str) -> dict[str, Any]:
    """Set `tool_choice` to `choice` when `tools` is a non-empty list, the history holds no tool
    result, and `tool_choice` is absent, null or "auto". A named function choice, "none" or any
    other value the client chose is left alone, and so is every later turn (after a tool result the
    model must be able to answer in plain text)."""
    tools = body.get("tools")
    if not (isinstance(tools, list) and tools):
        return body
    current = body.get("tool_choice")
    if not (current is None or (isinstance(current, str) and current in _FORCEABLE_TOOL_CHOICES)):
        return body
    if _has_tool_result(body):
        return body
    out = dict(body)
    out["tool_choice"] = choice
    return out


def _has_tool_result(body: dict[str, Any]) -> bool:
    """Whether the history holds a tool result: a chat message with role "tool" (or the legacy
    "function"), or a responses-API input item whose type is a tool-call output
    ("function_call_output" and its siblings such as "custom_tool_call_output")."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                role = message.get("role")
                if isinstance(role, str) and role in _TOOL_RESULT_ROLES:
                    return True
    items = body.get("input")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict):
                kind = item.get("type")
                if isinstance(kind, str) and kind.endswith("_call_output"):
                    return True
    return False


def _text_only(body: dict[str, Any]) -> dict[str, Any]:
    """Flatten array `content` to its text parts, in chat `messages` and in responses-API `input`
    message items. Only `content` is ever replaced: messages are not merged, dropped or reordered,
    and every other key (`role`, `tool_call_id`, `tool_calls`, …) is kept as it is."""
    out = body
    for key in ("messages", "input"):
        items = body.get(key)
        if not isinstance(items, list):
            continue
        new_items = _flatten_items(items)
        if new_items is not items:
            if out is body:
                out = dict(body)
            out[key] = new_items
    return out


def _flatten_items(items: list[Any]) -> list[Any]:
    """`items` with each message's array content flattened; `items` itself when none changes."""
    out = items
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        # Responses-API items other than messages ("reasoning", …) keep their content arrays.
        if "type" in item and item["type"] != "message":
            continue
        content = item.get("content")
        if not isinstance(content, list):
            continue
        text = _flatten_content(content)
        if text is None:
            continue
        if out is items:
            out = list(items)
        new_item = dict(item)
        new_item["content"] = text
        out[index] = new_item
    return out


def _flatten_content(parts: list[Any]) -> str | None:
    """The text parts of a content array joined with "\\n"; other parts (images, audio, files, …)
    are dropped. None when the array holds no text part at all: the caller then leaves it unchanged,
    because flattening it to "" would send an empty turn and silently lose what the client sent."""
    texts: list[str] = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            kind = part.get("type")
            text = part.get("text")
            if isinstance(kind, str) and kind in _TEXT_PART_TYPES and isinstance(text, str):
                texts.append(text)
    if not texts:
        return None
    return "\n".join(texts)

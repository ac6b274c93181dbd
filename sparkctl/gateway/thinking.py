"""A model's thinking switch (catalog `request.thinking_switch`, `request.thinking_default`).

Qwen 3.x, GLM 4.x and Nemotron Nano chat templates turn reasoning on and off with one boolean,
passed as `chat_template_kwargs.enable_thinking` (Qwen, Nemotron) or `.thinking` (GLM, DeepSeek).
Clients do not speak that: OpenCode and the OpenAI SDKs send `reasoning_effort` (or the Responses
API's `reasoning.effort`), some send a top-level `thinking` boolean. With `thinking_switch`, what
the client said reaches the switch, as the reference stack mapped it (seed inventory §3.2 item 6):

* a top-level `thinking` (a boolean, or Anthropic's `{"type": "enabled" | "disabled"}`) is moved
  into both names;
* `reasoning_effort` / `reasoningEffort` / `reasoning.effort` are taken out (the model has no
  effort levels): `"none"` turns thinking off, `minimal` … `max` and `auto` turn it on, anything
  else is dropped and changes nothing;
* a switch the client set itself in `chat_template_kwargs` always wins.

With `thinking_default`, a request that leaves the switch alone gets both names set to it (the
reference stack set only `enable_thinking`, which GLM's template does not read).

Pure, like the rest of the shaping: the body is never mutated, and is returned as it is when
nothing changes.
"""

from __future__ import annotations

from typing import Any

SWITCH_NAMES = ("enable_thinking", "thinking")
_EFFORT_ON = frozenset({"minimal", "low", "medium", "high", "xhigh", "max", "auto"})
_EFFORT_OFF = frozenset({"none"})


def map_switch(body: dict[str, Any]) -> dict[str, Any]:
    """A client's `thinking` / reasoning effort, moved onto the template's switch."""
    wanted: bool | None = None
    out = body
    if "thinking" in body:
        wanted = _thinking_flag(body["thinking"])
        out = {k: v for k, v in out.items() if k != "thinking"}
    for key in ("reasoning_effort", "reasoningEffort"):
        if key in out:
            wanted = _effort_flag(out[key], wanted)
            out = {k: v for k, v in out.items() if k != key}
    reasoning = out.get("reasoning")
    if isinstance(reasoning, dict) and "effort" in reasoning:
        wanted = _effort_flag(reasoning["effort"], wanted)
        rest = {k: v for k, v in reasoning.items() if k != "effort"}
        out = {k: v for k, v in out.items() if k != "reasoning"}
        if rest:
            out["reasoning"] = rest
    if wanted is None:
        return out
    return _set_switch(out, wanted)


def apply_default(body: dict[str, Any], default: bool) -> dict[str, Any]:
    """Both switch names set to `default`, unless the request set either."""
    return _set_switch(body, default)


def _set_switch(body: dict[str, Any], value: bool) -> dict[str, Any]:
    """Both switch names set to `value`, unless the client set either itself."""
    kwargs = body.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        return body  # not ours to fix: the engine says what is wrong with it
    current = kwargs or {}
    if any(name in current for name in SWITCH_NAMES):
        return body
    out = dict(body)
    out["chat_template_kwargs"] = {**current, **dict.fromkeys(SWITCH_NAMES, value)}
    return out


def _thinking_flag(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, dict) and value.get("type") in ("enabled", "disabled"):
        return bool(value["type"] == "enabled")
    return None


def _effort_flag(value: Any, before: bool | None) -> bool | None:
    if isinstance(value, str):
        if value.lower() in _EFFORT_OFF:
            return False
        if value.lower() in _EFFORT_ON:
            return True
    return before  # unrecognised: dropped, and nothing changes

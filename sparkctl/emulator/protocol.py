"""What a generation request comes to (Job), and reading vLLM's chat and text completion requests
into one; the rules every generating route shares: how long a reply may run (the context
window, `max_tokens`), where it ends by itself (`Prompt.answer_length`, `min_tokens`,
`ignore_eos`), and vLLM's refusals on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sparkctl.emulator.tokens import Prompt
from sparkctl.emulator.tools import Choice, Function, Named, ToolCall, decide
from sparkctl.emulator.wire import (
    as_dict,
    bad,
    flag,
    invalid,
    missing,
    opt_dict,
    opt_int,
    opt_list,
    str_list,
    value_error,
)

NO_SUCH_TOOL = "The tool specified in `tool_choice` does not match any of the specified `tools`"


@dataclass(frozen=True, slots=True)
class Job:
    """One validated generation request."""

    chat: bool
    model: str
    prompt_tokens: int
    max_tokens: int  # the cap: what was asked, else what the context window leaves
    length: int  # tokens before the model stops by itself; at or past max_tokens the cap cuts it
    stream: bool
    include_usage: bool
    stop: tuple[str, ...]
    tool: ToolCall | None


@dataclass(frozen=True, slots=True)
class Sampling:
    """The sampling parameters that decide where a reply ends."""

    max_tokens: int | None
    min_tokens: int = 0
    ignore_eos: bool = False  # vLLM's extension: never stop before the cap
    seed: int | None = None
    stop: tuple[str, ...] = ()


def context_cap(prompt_tokens: int, requested: int | None, limit: int) -> int:
    """The reply's cap, or vLLM's 400 when the prompt and the reply do not fit the context."""
    if requested is None:
        if prompt_tokens >= limit:
            raise bad(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_tokens} tokens in the messages, Please reduce the length of the messages."
            )
        return limit - prompt_tokens
    if prompt_tokens + requested > limit:
        raise bad(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the messages, {requested} in "
            "the completion). Please reduce the length of the messages or completion."
        )
    return requested


def reply_length(prompt: Prompt, sampling: Sampling, cap: int, seed: int) -> int:
    """Where the reply ends by itself, after vLLM's own checks of the sampling parameters."""
    if sampling.min_tokens < 0:
        raise bad(f"min_tokens must be greater than or equal to 0, got {sampling.min_tokens}.")
    if sampling.min_tokens > cap:
        raise bad(f"min_tokens must be less than or equal to max_tokens={cap}, got {sampling.min_tokens}.")
    if sampling.ignore_eos:
        return cap
    own_seed = seed if sampling.seed is None else sampling.seed
    return max(prompt.answer_length(own_seed), sampling.min_tokens)


def positive(value: int | None, name: str = "max_tokens") -> int | None:
    if value is not None and value < 1:
        raise bad(f"{name} must be at least 1, got {value}.")
    return value


def openai_sampling(body: dict[str, Any], *, chat: bool) -> Sampling:
    # vLLM: max_completion_tokens supersedes the deprecated max_tokens.
    requested = opt_int(body, "max_completion_tokens") if chat else None
    if requested is None:
        requested = opt_int(body, "max_tokens")
    return Sampling(
        max_tokens=requested,
        min_tokens=opt_int(body, "min_tokens") or 0,
        ignore_eos=flag(body, "ignore_eos"),
        seed=opt_int(body, "seed"),
        stop=tuple(s for s in str_list(body, "stop") if s),
    )


def chat_prompt(body: dict[str, Any]) -> tuple[Prompt, str | None]:
    """The prompt of a chat, and the text of its last message if a user wrote it."""
    messages = opt_list(body, "messages")
    if messages is None:
        raise missing(body, ("messages",))
    prompt = Prompt()
    last_user: str | None = None
    for i, raw in enumerate(messages):
        message = as_dict(raw, ("messages", i))
        role = message.get("role")
        if not isinstance(role, str):
            raise missing(message, ("messages", i, "role"))
        texts = content_texts(message.get("content"), ("messages", i, "content"))
        for text in texts:
            prompt.add(text)
        last_user = " ".join(texts) if role == "user" else None
    return prompt, last_user


def content_texts(content: Any, loc: tuple[str | int, ...]) -> list[str]:
    """The texts of a message's content: a string, or the `text` of each part (None: none)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        texts = []
        for j, raw in enumerate(content):
            text = as_dict(raw, (*loc, j)).get("text")
            if isinstance(text, str):
                texts.append(text)
        return texts
    raise invalid(loc, "string_type", "Input should be a valid string", content)


def completion_prompt(body: dict[str, Any]) -> Prompt:
    if "prompt" not in body:
        raise missing(body, ("prompt",))
    value = body["prompt"]
    prompt = Prompt()
    if isinstance(value, str):
        prompt.add(value)
        return prompt
    if isinstance(value, list) and value:
        if all(isinstance(p, str) for p in value):
            for p in value:
                prompt.add(p)
            return prompt
        if all(isinstance(p, int) and not isinstance(p, bool) for p in value):
            prompt.add_ids(value)  # token ids
            return prompt
        if all(isinstance(p, list) for p in value):
            for p in value:
                prompt.add_ids(p)
            return prompt
    raise invalid(("prompt",), "string_type", "Input should be a valid string", value)


def include_usage(body: dict[str, Any]) -> bool:
    options = opt_dict(body, "stream_options")
    return options is not None and flag(options, "include_usage", ("stream_options",))


def chat_tool(body: dict[str, Any], last_user: str | None) -> ToolCall | None:
    """The tool call a chat reply makes (vLLM's check_tool_usage rules), or None for text."""
    tools = opt_list(body, "tools")
    functions = []
    for i, raw in enumerate(tools or []):
        fn = opt_dict(as_dict(raw, ("tools", i)), "function", ("tools", i))
        if fn is None:
            raise missing(raw, ("tools", i, "function"))
        name = fn.get("name")
        if not isinstance(name, str):
            raise missing(fn, ("tools", i, "function", "name"))
        functions.append(Function(name, fn.get("parameters")))
    return decide(functions, _chat_choice(body, functions), last_user)


def _chat_choice(body: dict[str, Any], functions: list[Function]) -> Choice:
    choice = body.get("tool_choice")
    if choice is None:
        return "auto"
    if choice == "none":
        return "none"
    if body.get("tools") is None:
        raise value_error("When using `tool_choice`, `tools` must be set.", body)
    if choice in ("auto", "required"):
        return "none" if choice == "required" and not functions else choice
    usage = 'Correct usage: `{"type": "function", "function": {"name": "my_function"}}`'
    if not isinstance(choice, dict):
        raise value_error(
            f"Invalid value for `tool_choice`: {choice}! "
            'Only named tools, "none", "auto" or "required" are supported.',
            body,
        )
    fn = choice.get("function")
    name = fn.get("name") if isinstance(fn, dict) else None
    if not isinstance(name, str) or not name:
        raise value_error(f"Invalid value for `function`: `{fn}` in `tool_choice`! {usage}", body)
    if not any(f.name == name for f in functions):
        raise value_error(NO_SUCH_TOOL, body)
    return Named(name)


def embedding_inputs(body: dict[str, Any]) -> list[tuple[str, int]]:
    """(text to hash, prompt tokens) for each input."""
    value = body.get("input")
    if isinstance(value, str):
        return [(value, len(value.split()))]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return [(v, len(v.split())) for v in value]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [(" ".join(map(str, value)), len(value))]
        if all(isinstance(v, list) for v in value):
            return [(" ".join(map(str, v)), len(v)) for v in value]
    if value is None:
        raise missing(body, ("input",))
    raise invalid(("input",), "string_type", "Input should be a valid string", value)

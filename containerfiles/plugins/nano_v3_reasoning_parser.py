"""vLLM reasoning parser `nano_v3` for NVIDIA Nemotron 3 Nano, loaded with
`--reasoning-parser-plugin /workspace/plugins/nano_v3_reasoning_parser.py --reasoning-parser nano_v3`.

Nemotron 3 Nano writes its thinking between <think> and </think>, as DeepSeek-R1 does, so this is
vLLM's DeepSeek-R1 parser with one difference. With thinking switched off
(`chat_template_kwargs.enable_thinking = false`, sparkctl's default for this model) the model
still often answers inside the reasoning section and closes nothing, so the R1 parser returns the
whole answer as `reasoning` and an empty `content`: clients that show only content see nothing.
When thinking is off and no content came, this parser hands the reasoning text back as content.
With thinking on it behaves exactly like the R1 parser. Streamed responses get the same treatment
per delta where vLLM tells the parser the request's chat_template_kwargs (the streaming methods
receive no request); elsewhere streaming behaves like the R1 parser.

vLLM renamed the parser methods over time (`extract_reasoning_content` → `extract_reasoning`, and
the streaming variants likewise); the override is installed under whichever names this vLLM has.
"""

from __future__ import annotations

from typing import Any

from vllm.reasoning import ReasoningParserManager
from vllm.reasoning.deepseek_r1_reasoning_parser import DeepSeekR1ReasoningParser


def thinking_enabled(request: Any) -> bool:
    """What the client asked for; the chat template's own default (on) when it did not say."""
    kwargs = getattr(request, "chat_template_kwargs", None) or {}
    for key in ("enable_thinking", "thinking"):
        if key in kwargs:
            return bool(kwargs[key])
    return True


def swap(reasoning: str | None, content: str | None, request: Any) -> tuple[str | None, str | None]:
    """(reasoning, content) as the client should see them."""
    if not thinking_enabled(request) and not (content or "").strip() and reasoning:
        return None, reasoning
    return reasoning, content


class NanoV3ReasoningParser(DeepSeekR1ReasoningParser):
    def __init__(self, tokenizer: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(tokenizer, *args, **kwargs)
        # Streaming calls carry no request; vLLM versions that pass the request's
        # chat_template_kwargs to the parser let streaming honour the switch too.
        self._thinking = thinking_enabled(_Kwargs(kwargs.get("chat_template_kwargs")))


class _Kwargs:
    def __init__(self, chat_template_kwargs: Any) -> None:
        self.chat_template_kwargs = chat_template_kwargs


def _whole(name: str) -> Any:
    base = getattr(DeepSeekR1ReasoningParser, name)

    def method(self: Any, model_output: str, request: Any) -> tuple[str | None, str | None]:
        reasoning, content = base(self, model_output, request)
        return swap(reasoning, content, request)

    method.__name__ = name
    return method


def _streaming(name: str) -> Any:
    base = getattr(DeepSeekR1ReasoningParser, name)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        delta = base(self, *args, **kwargs)
        request = kwargs.get("request")
        enabled = thinking_enabled(request) if request is not None else self._thinking
        # Per delta: with thinking off, text the R1 parser files under reasoning is shown as content.
        if delta is not None and not enabled:
            reasoning = getattr(delta, "reasoning", None) or getattr(delta, "reasoning_content", None)
            if reasoning and not getattr(delta, "content", None):
                delta.content = reasoning
                for field in ("reasoning", "reasoning_content"):
                    if hasattr(delta, field):
                        setattr(delta, field, None)
        return delta

    method.__name__ = name
    return method


for _name in ("extract_reasoning", "extract_reasoning_content"):
    if hasattr(DeepSeekR1ReasoningParser, _name):
        setattr(NanoV3ReasoningParser, _name, _whole(_name))
for _name in ("extract_reasoning_streaming", "extract_reasoning_content_streaming"):
    if hasattr(DeepSeekR1ReasoningParser, _name):
        setattr(NanoV3ReasoningParser, _name, _streaming(_name))

ReasoningParserManager.register_module("nano_v3")(NanoV3ReasoningParser)

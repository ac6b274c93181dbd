"""What a generation came to (Outcome), and the JSON bodies vLLM reports it in: whole completions,
streamed deltas, usage, and the embeddings it answers /v1/embeddings with.

Embeddings are a hash of the input, normalised: the same text always gets the same vector.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from dataclasses import dataclass
from typing import Any

from sparkctl.emulator.protocol import Job
from sparkctl.emulator.tools import ToolCall

EMBEDDING_DIM = 32


@dataclass(frozen=True, slots=True)
class Outcome:
    text: str
    call: ToolCall | None
    completion_tokens: int
    finish: str  # vLLM's finish_reason: stop, length or tool_calls
    stop_sequence: str | None = None  # the stop string that ended it, if one did


def delta_choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """One streamed chat choice."""
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def usage(job: Job, outcome: Outcome) -> dict[str, int]:
    completion = outcome.completion_tokens
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": job.prompt_tokens + completion,
    }


def _tool_call_json(call: ToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.call_id, "type": "function", "function": function}


def completion_body(job: Job, outcome: Outcome, rid: str, created: int) -> dict[str, Any]:
    """The body of a non-streamed chat or text completion."""
    choice: dict[str, Any] = {"index": 0}
    if not job.chat:
        choice["text"] = outcome.text
    elif outcome.call is not None:
        call = _tool_call_json(outcome.call)
        choice["message"] = {"role": "assistant", "content": None, "tool_calls": [call]}
    else:
        choice["message"] = {"role": "assistant", "content": outcome.text}
    choice["logprobs"] = None
    choice["finish_reason"] = outcome.finish
    return {
        "id": rid,
        "object": "chat.completion" if job.chat else "text_completion",
        "created": created,
        "model": job.model,
        "choices": [choice],
        "usage": usage(job, outcome),
    }


def embedding(text: str, base64_encoded: bool) -> list[float] | str:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [b - 127.5 for b in digest[:EMBEDDING_DIM]]  # never zero, so the norm is never zero
    norm = math.sqrt(sum(x * x for x in raw))
    vector = [x / norm for x in raw]
    if base64_encoded:
        return base64.b64encode(struct.pack(f"<{EMBEDDING_DIM}f", *vector)).decode()
    return vector

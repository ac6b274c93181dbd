"""POST /tokenize and POST /detokenize as vLLM answers them, with the emulator's word tokens:
a prompt tokenizes to as many tokens as the generating routes count for it, so a client that
sizes a request with /tokenize sizes it right.
"""

from __future__ import annotations

from typing import Any

from sparkctl.emulator.tokens import VOCAB_SIZE, Vocabulary
from sparkctl.emulator.wire import as_dict, bad, flag, invalid, missing, opt_list


def tokenize(body: dict[str, Any], vocab: Vocabulary, max_model_len: int) -> dict[str, Any]:
    """A completion-style request (`prompt`) or a chat-style one (`messages`)."""
    if isinstance(body.get("prompt"), str):
        text = body["prompt"]
    elif "prompt" in body:
        raise invalid(("prompt",), "string_type", "Input should be a valid string", body["prompt"])
    else:
        text = " ".join(_chat_texts(body))
    ids, words = vocab.encode(text)
    return {
        "count": len(ids),
        "max_model_len": max_model_len,
        "tokens": ids,
        "token_strs": words if flag(body, "return_token_strs") else None,
    }


def _chat_texts(body: dict[str, Any]) -> list[str]:
    messages = opt_list(body, "messages")
    if messages is None:
        raise missing(body, ("messages",))
    texts: list[str] = []
    for i, raw in enumerate(messages):
        content = as_dict(raw, ("messages", i)).get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return texts


def detokenize(body: dict[str, Any], vocab: Vocabulary) -> dict[str, Any]:
    tokens = opt_list(body, "tokens")
    if tokens is None:
        raise missing(body, ("tokens",))
    for i, token in enumerate(tokens):
        if not isinstance(token, int) or isinstance(token, bool):
            raise invalid(("tokens", i), "int_type", "Input should be a valid integer", token)
        if not 0 <= token < VOCAB_SIZE:
            raise bad(f"Token id {token} is out of vocabulary")
    return {"prompt": vocab.decode(tokens)}

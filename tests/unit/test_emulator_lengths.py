"""sparkctl.emulator's realism: replies end at a natural length drawn from the prompt and the seed
(vLLM's `min_tokens` and `ignore_eos` still force a length), and /tokenize, /detokenize count
as every generating route does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from sparkctl.emulator.tokens import VOCAB_SIZE, Prompt, word_id
from tests.unit.test_emulator import Emu, expected_text, spawn, start

__all__ = ["spawn"]  # a fixture, used by name
QUESTIONS = [f"question number {i} about things" for i in range(12)]


@pytest.fixture(scope="module")
def emu() -> Iterator[Emu]:
    shared = start("--served-model-name", "m", "--max-model-len", "1024")
    try:
        yield shared
    finally:
        shared.stop()


async def post(session: aiohttp.ClientSession, emu: Emu, path: str, body: dict[str, Any]) -> Any:
    async with session.post(f"{emu.url}{path}", json={"model": "m", **body}) as resp:
        return resp.status, await resp.json()


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


async def lengths(emu: Emu, **extra: Any) -> list[int]:
    async with aiohttp.ClientSession() as session:
        replies = [await post(session, emu, "/v1/chat/completions", chat(q, **extra)) for q in QUESTIONS]
    for status, reply in replies:
        assert status == 200
        n = reply["usage"]["completion_tokens"]
        assert reply["choices"][0]["message"]["content"] == expected_text(n)
        assert reply["choices"][0]["finish_reason"] == "stop"  # the model ended it, no cap did
    return [r["usage"]["completion_tokens"] for _, r in replies]


async def test_replies_end_at_a_natural_length_drawn_from_prompt_and_seed(
    emu: Emu, spawn: Callable[..., Emu]
) -> None:
    natural = await lengths(emu)
    assert all(16 <= n < 512 for n in natural) and len(set(natural)) >= 6
    assert await lengths(emu) == natural  # deterministic
    # exactly what the emulator's own rule says, for seed 0
    prompt = Prompt()
    prompt.add(QUESTIONS[0])
    assert natural[0] == prompt.answer_length(0)
    assert await lengths(emu, seed=5) != natural  # vLLM's per-request seed
    reseeded = spawn("--served-model-name", "m", "--max-model-len", "1024", "--seed", "5")
    assert await lengths(reseeded) == await lengths(emu, seed=5)  # `--seed` sets it for all
    # streamed or not, the same reply
    async with aiohttp.ClientSession() as session:
        body = {"model": "m", **chat(QUESTIONS[3]), "stream": True, "stream_options": {"include_usage": True}}
        async with session.post(f"{emu.url}/v1/chat/completions", json=body) as resp:
            raw = (await resp.read()).decode()
    assert f'"completion_tokens":{natural[3]},' in raw and '"finish_reason":"stop"' in raw


async def test_a_cap_below_the_natural_length_cuts_the_reply(emu: Emu) -> None:
    async with aiohttp.ClientSession() as session:
        for cap in (1, 7, 16):
            status, reply = await post(
                session, emu, "/v1/completions", {"prompt": "tell me", "max_tokens": cap}
            )
            assert status == 200 and reply["usage"]["completion_tokens"] == cap
            assert reply["choices"][0]["finish_reason"] == "length"


async def test_min_tokens_and_ignore_eos_force_the_length(emu: Emu) -> None:
    async with aiohttp.ClientSession() as session:
        _, forced = await post(
            session, emu, "/v1/chat/completions", chat("hi", max_tokens=600, ignore_eos=True)
        )
        assert (
            forced["usage"]["completion_tokens"] == 600 and forced["choices"][0]["finish_reason"] == "length"
        )
        _, least = await post(
            session, emu, "/v1/completions", {"prompt": "hi", "max_tokens": 600, "min_tokens": 550}
        )
        assert least["usage"]["completion_tokens"] == 550 and least["choices"][0]["finish_reason"] == "stop"
        _, reply = await post(
            session, emu, "/v1/responses", {"input": "hi", "max_output_tokens": 600, "ignore_eos": True}
        )
        assert reply["usage"]["output_tokens"] == 600 and reply["status"] == "incomplete"
        status, refused = await post(session, emu, "/v1/completions", {"prompt": "hi", "min_tokens": -1})
        assert (
            status == 400
            and refused["error"]["message"] == "min_tokens must be greater than or equal to 0, got -1."
        )


async def test_without_max_tokens_the_context_is_the_cap(spawn: Callable[..., Emu]) -> None:
    small = spawn("--served-model-name", "m", "--max-model-len", "20")
    async with aiohttp.ClientSession() as session:
        status, reply = await post(session, small, "/v1/chat/completions", chat("w " * 17))
        assert status == 200 and reply["usage"]["completion_tokens"] == 3
        assert reply["choices"][0]["finish_reason"] == "length"
        status, refused = await post(session, small, "/v1/chat/completions", chat("w " * 20))
    assert status == 400 and refused["error"]["type"] == "BadRequestError"
    assert refused["error"]["message"] == (
        "This model's maximum context length is 20 tokens. However, you requested 20 tokens in the "
        "messages, Please reduce the length of the messages."
    )


async def test_tokenize_and_detokenize(emu: Emu) -> None:
    text = "the quick  brown\nfox"
    async with aiohttp.ClientSession() as session:
        status, tokenized = await post(session, emu, "/tokenize", {"prompt": text})
        assert status == 200 and tokenized["count"] == 4 and tokenized["max_model_len"] == 1024
        assert tokenized["token_strs"] is None
        ids = tokenized["tokens"]
        assert len(ids) == 4 and all(0 <= i < VOCAB_SIZE for i in ids) and ids[0] == word_id("the")
        _, detokenized = await post(session, emu, "/detokenize", {"tokens": ids})
        assert detokenized == {"prompt": "the quick brown fox"}
        # the same count as the generating routes', for a prompt and for a chat
        _, completion = await post(session, emu, "/v1/completions", {"prompt": text, "max_tokens": 1})
        assert completion["usage"]["prompt_tokens"] == 4
        _, by_ids = await post(session, emu, "/v1/completions", {"prompt": ids, "max_tokens": 1})
        assert by_ids["usage"]["prompt_tokens"] == 4
        messages = [
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": [{"type": "text", "text": text}]},
        ]
        _, counted = await post(session, emu, "/tokenize", {"messages": messages, "return_token_strs": True})
        _, chatted = await post(session, emu, "/v1/chat/completions", {"messages": messages, "max_tokens": 1})
        assert counted["count"] == chatted["usage"]["prompt_tokens"] == 6
        assert counted["token_strs"] == ["be", "kind", "the", "quick", "brown", "fox"]
        # reply words are known without being tokenized first; an unseen id gets a stand-in
        _, reply_words = await post(
            session, emu, "/detokenize", {"tokens": [word_id("lorem"), word_id("ipsum"), 7]}
        )
        assert reply_words == {"prompt": "lorem ipsum <|7|>"}
        for path, body, code, param in [
            ("/detokenize", {"tokens": [VOCAB_SIZE]}, 400, None),
            ("/detokenize", {"tokens": ["a"]}, 400, "body.tokens.0"),
            ("/detokenize", {}, 400, "body.tokens"),
            ("/tokenize", {}, 400, "body.messages"),
            ("/tokenize", {"prompt": 5}, 400, "body.prompt"),
            ("/tokenize", {"prompt": "a", "model": "nope"}, 404, None),
        ]:
            async with session.post(f"{emu.url}{path}", json=body) as resp:
                error = (await resp.json())["error"]
                assert (resp.status, error["param"]) == (code, param), (path, body, error)

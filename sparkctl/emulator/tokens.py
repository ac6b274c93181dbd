"""The emulator's stand-in for a tokenizer: a token is a whitespace-separated word.

Every route counts a prompt the same way (Prompt), so /tokenize agrees with the `usage` of chat,
completions, responses and messages. A word's token id is a hash of it, the same in every
emulator process; /detokenize turns ids back into the words this process has tokenized (and the
words it generates), so tokenize → detokenize round-trips.

A reply cycles through the words of lorem ipsum, one word (plus a space) per token, so a test can
predict any reply exactly. How long it runs before the model "emits EOS" is drawn from the prompt
and the seed (Prompt.answer_length): the same request always gets an answer of the same length,
and different prompts get different lengths, as a real model's answers have.
"""

from __future__ import annotations

import hashlib
import json
from typing import ClassVar

LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris "
    "nisi aliquip ex ea commodo consequat"
)
TOKENS = tuple(w + " " for w in LOREM.split())  # token k of a reply is TOKENS[k % len(TOKENS)]
TOKENS_JSON = tuple(json.dumps(t) for t in TOKENS)

VOCAB_SIZE = 151_936  # a Qwen-sized vocabulary; ids below _SPECIAL are never given to a word
_SPECIAL = 256
_KNOWN_LIMIT = 1 << 16  # words /detokenize remembers (oldest forgotten first), so memory stays bounded

# Natural answer lengths are log-uniform over [_SHORTEST, _LONGEST): mostly a few dozen tokens,
# now and then a few hundred. The floor keeps every request capped at 16 tokens or fewer
# running to its cap, as the emulator's callers long relied on.
_SHORTEST = 16
_LONGEST = 512


def token_text(k: int) -> str:
    """The text of a reply's k-th token."""
    return TOKENS[k % len(TOKENS)]


def reply_text(n: int) -> str:
    """The text of a reply's first n tokens (a streamed reply is not buffered: this rebuilds it)."""
    return "".join(token_text(k) for k in range(n))


def word_id(word: str) -> int:
    digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
    return _SPECIAL + int.from_bytes(digest, "big") % (VOCAB_SIZE - _SPECIAL)


class Prompt:
    """A prompt being read: its token count, and a digest that decides its answer's length."""

    __slots__ = ("_digest", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self._digest = hashlib.blake2b(digest_size=8)

    def add(self, text: str) -> None:
        self.tokens += len(text.split())
        self._digest.update(text.encode())
        self._digest.update(b"\0")

    def add_ids(self, ids: list[int]) -> None:
        self.tokens += len(ids)
        self._digest.update(json.dumps(ids).encode())
        self._digest.update(b"\0")

    def answer_length(self, seed: int) -> int:
        """Where an answer to this prompt ends by itself (its EOS), for this seed."""
        digest = self._digest.copy()
        digest.update(str(seed).encode())
        u = int.from_bytes(digest.digest(), "big") / 2**64
        return int(_SHORTEST * (_LONGEST / _SHORTEST) ** u)


class Vocabulary:
    """Word ↔ id for /tokenize and /detokenize: the reverse direction knows the reply words and
    the words tokenized so far (a hash cannot be inverted)."""

    _REPLY_WORDS: ClassVar[dict[int, str]] = {word_id(t.strip()): t.strip() for t in TOKENS}

    def __init__(self) -> None:
        self._learned: dict[int, str] = {}

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        words = text.split()
        ids = [word_id(w) for w in words]
        for i, w in zip(ids, words, strict=True):
            self._learn(i, w)
        return ids, words

    def decode(self, ids: list[int]) -> str:
        # An id never seen gets a stand-in word, as a real tokenizer has a piece for every id.
        return " ".join(self._word(i) for i in ids)

    def _word(self, token_id: int) -> str:
        return self._REPLY_WORDS.get(token_id) or self._learned.get(token_id) or f"<|{token_id}|>"

    def _learn(self, token_id: int, word: str) -> None:
        if token_id in self._learned or token_id in self._REPLY_WORDS:
            return
        if len(self._learned) >= _KNOWN_LIMIT:
            del self._learned[next(iter(self._learned))]
        self._learned[token_id] = word

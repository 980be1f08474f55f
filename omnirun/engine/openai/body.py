"""What is sent: a prompt or a conversation and the generation settings as an OpenAI request body.

A conversation reaches `generate` as the text `render_chat` made of it: the messages as JSON behind a marker
(`CHAT_MARK`), so that the tasks' prompt handling (templating, per-record parameters, batching, resume) stays
the same for every backend while the server receives real messages on `/chat/completions` and applies its own
chat template. Any other text is a plain prompt for `/completions`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from omnirun.config import GenerationConfig
from omnirun.errors import ConfigError

CHAT_MARK = "\x1eomnirun.chat\x1e"
"""Starts a rendered conversation (ASCII record separators: no prompt starts with them by accident)."""
CHAT_PATH = "/chat/completions"
COMPLETIONS_PATH = "/completions"
DEFAULT_TOP_K = GenerationConfig().top_k
"""Transformers' habit, not a user's choice: sent only when changed (OpenAI's own API refuses the key)."""
CHARS_PER_TOKEN = 4
"""The usual estimate for English text, where no tokenizer is at hand."""


@dataclass(frozen=True)
class Request:
    """One request: where it goes, its body, and the prompt's estimated size (when the server reports none)."""

    path: str
    body: dict[str, Any]
    estimate: int

    @property
    def key(self) -> str:
        """The request without its seed: which record of a batch it serves, for the retry of that batch."""
        return self.path + json.dumps({k: v for k, v in self.body.items() if k != "seed"}, sort_keys=True)


def encode_chat(messages: list[dict[str, str]]) -> str:
    """A conversation as `render_chat` returns it."""
    return CHAT_MARK + json.dumps([dict(m) for m in messages], ensure_ascii=False)


def decode_chat(text: str) -> list[dict[str, Any]] | None:
    """The conversation `text` carries, or None for a plain prompt."""
    if not text.startswith(CHAT_MARK):
        return None
    messages = json.loads(text[len(CHAT_MARK) :])
    return messages if isinstance(messages, list) else None


def estimate_tokens(text: str) -> int:
    """About how many tokens `text` (a prompt or a rendered conversation) has: its characters / 4. Used to sort
    records by length, and as `input_tokens` only when the server reports no usage."""
    messages = decode_chat(text)
    if messages is None:
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    return sum(math.ceil(len(str(m.get("content", ""))) / CHARS_PER_TOKEN) + 4 for m in messages)


def request(model: str, text: str, params: GenerationConfig, seed: int | None) -> Request:
    """The request for one text: `/chat/completions` with its messages when `render_chat` made it, else
    `/completions` with the prompt as it is."""
    messages = decode_chat(text)
    body: dict[str, Any] = {"model": model}
    if messages is None:
        path = COMPLETIONS_PATH
        body["prompt"] = text
    else:
        path = CHAT_PATH
        body["messages"] = messages
    body.update(sampling(params, seed))
    return Request(path, body, estimate_tokens(text))


def request_ids(model: str, ids: list[int], params: GenerationConfig, seed: int | None) -> Request:
    """A prompt given as token ids (`/completions` accepts a list of ints, as vLLM and OpenAI do)."""
    body: dict[str, Any] = {"model": model, "prompt": list(ids), **sampling(params, seed)}
    return Request(COMPLETIONS_PATH, body, len(ids))


def sampling(params: GenerationConfig, seed: int | None) -> dict[str, Any]:
    """The generation settings as OpenAI body fields (streamed, with usage), refusing what a server cannot do.

    `max_new_tokens` -> `max_tokens`; `temperature` (0 when `do_sample` is false: greedy) and `top_p`; `seed`;
    `response_format` as it is (json_object, json_schema). vLLM's and SGLang's extensions, sent only when set
    away from their no-op value: `top_k`, `repetition_penalty`, `min_tokens` (from `min_new_tokens`).
    Beam search, `no_repeat_ngram_size` and a regex format are refused (ConfigError naming the key)."""
    refuse(params)
    body: dict[str, Any] = {
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature if params.do_sample else 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if params.do_sample:
        body["top_p"] = params.top_p
        if params.top_k not in (0, DEFAULT_TOP_K):
            body["top_k"] = params.top_k
    if params.repetition_penalty != 1.0:
        body["repetition_penalty"] = params.repetition_penalty
    if params.min_new_tokens:
        body["min_tokens"] = params.min_new_tokens
    if seed is not None:
        body["seed"] = seed
    if params.response_format is not None:
        body["response_format"] = params.response_format
    return body


def refuse(params: GenerationConfig) -> None:
    """ConfigError for a setting no OpenAI-compatible server honours."""
    backend = "hardware.backend=openai"
    if params.num_beams > 1:
        raise ConfigError(
            f"generation.num_beams={params.num_beams}: {backend} has no beam search (the OpenAI API has none); "
            "set generation.num_beams=1"
        )
    if params.no_repeat_ngram_size:
        raise ConfigError(
            f"generation.no_repeat_ngram_size={params.no_repeat_ngram_size}: {backend} cannot forbid repeated "
            "n-grams (the OpenAI API has no such field); set it to 0, or use generation.repetition_penalty"
        )
    kind = (params.response_format or {}).get("type")
    if kind == "regex":
        raise ConfigError(
            f"generation.response_format type regex: {backend} sends only OpenAI's json_object and json_schema "
            "formats; use one of them"
        )

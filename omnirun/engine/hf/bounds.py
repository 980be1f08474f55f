"""Sizes checked before they are allocated, on the Transformers backend.

Text: tokenizing a text costs a few hundred bytes per character (a 5 MB text took 2.4 GB), so a long text is
never tokenized whole where only its start matters. `head` tokenizes a prefix that holds the first `keep`
tokens with `TOKEN_SLACK` to spare; where the model truncates to its context anyway (embed, rerank) the
prefix gives the same tokens as the whole text, and where a text over the context is an error (classify,
token_classify, fill_mask, a qa question, a generation prompt) the prefix alone proves it is over.

Audio models: a wav2vec2-style feature encoder's first convolution holds `conv_dim[0]` floats per
`conv_stride[0]` samples of the whole clip; `forward_mb` estimates it so a clip the machine cannot run is
refused before the forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omnirun.choices import TaskName
from omnirun.errors import InputError
from omnirun.inputs import media
from omnirun.task_config import TaskConfig, TranscribeConfig, options_as

CHARS_PER_TOKEN = 32
"""A generous bound on the characters a token covers: the first prefix tried holds this many per token wanted
(English averages about 4). A text that normalizes to fewer tokens (long runs of spaces) gets a longer prefix."""

TOKEN_SLACK = 64
"""Tokens a prefix must hold beyond those kept: cutting a text changes only its last words' tokens."""

GROWTH = 4
"""How much longer each next prefix is when one holds too few tokens."""

MAX_QA_CONTEXT_CHARS = 1_000_000
"""The longest qa context, in characters (~250,000 tokens; tokenizing it takes ~0.3-0.5 GB): every window of
a context is answered, so it is tokenized whole."""

QA_WINDOWS_PER_PASS = 64
"""How many 384-token windows of qa contexts one forward pass takes (a long context's windows in several)."""

ACTIVATION_COPIES = 3
"""Copies of the first convolution's output a feature encoder holds at its peak (output, norm, activation)."""


@dataclass(frozen=True)
class Head:
    """The text to tokenize: the whole text (`cut` False), or a prefix of it whose tokens (`tokens`, without
    special tokens) start with the whole text's first `keep` tokens and hold `TOKEN_SLACK` more."""

    text: str
    cut: bool = False
    tokens: int = 0


def head(tokenizer: Any, text: str, keep: int) -> Head:
    """The shortest prefix of `text` (of `(keep + TOKEN_SLACK) * CHARS_PER_TOKEN` characters, times `GROWTH`
    until it holds `keep + TOKEN_SLACK` tokens) or the text itself when it is shorter."""
    size = (keep + TOKEN_SLACK) * CHARS_PER_TOKEN
    while size < len(text):
        prefix = text[:size]
        n = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        if n >= keep + TOKEN_SLACK:
            return Head(prefix, True, n)
        size *= GROWTH
    return Head(text)


def over_context(what: str, text: str, cut: Head, limit: int) -> InputError:
    """The error for a text whose prefix alone has more tokens than the model's context."""
    return InputError(
        f"{what} is longer than the model's context of {limit} tokens: its first {len(cut.text):,} characters "
        f"(of {len(text):,}) are already {cut.tokens:,} tokens; shorten it, or split it into several records"
    )


def check_fits(tokenizer: Any, what: str, text: Any, limit: int | None) -> None:
    """InputError when `text` has more tokens than `limit`, proved from a prefix (the text is not tokenized
    whole when a prefix already shows it)."""
    if limit is None or not isinstance(text, str):
        return
    cut = head(tokenizer, text, limit)
    if cut.cut:
        raise over_context(what, text, cut, limit)


def bounded(tokenizer: Any, texts: list[str], limit: int | None) -> list[str]:
    """Each text, or the prefix of it that a truncation to `limit` tokens keeps the same tokens of."""
    if limit is None:
        return texts
    return [head(tokenizer, t, limit).text if isinstance(t, str) else t for t in texts]


def check_qa_context(context: Any, max_chars: int = MAX_QA_CONTEXT_CHARS) -> None:
    """InputError when a qa context is longer than `max_chars` (`task.max_context_chars`)."""
    if isinstance(context, str) and len(context) > max_chars:
        raise InputError(
            f"the context is {len(context):,} characters, over the limit of {max_chars:,} per qa record "
            "(task.max_context_chars: every window of a context is tokenized and answered); "
            "split it into several records or raise the limit"
        )


def forward_mb(config: Any, samples: int) -> float | None:
    """The peak memory of a wav2vec2-style feature encoder (`conv_dim`, `conv_stride` in its config) on
    `samples` samples, in MB: its first convolution's output, `ACTIVATION_COPIES` times; None for other models
    (their feature extractors cut or window the audio, or their cost is not known here)."""
    dims, strides = getattr(config, "conv_dim", None), getattr(config, "conv_stride", None)
    if not dims or not strides:
        return None
    return float(dims[0]) * (samples / float(strides[0])) * 4 * ACTIVATION_COPIES / (1 << 20)


def bounded_pair(tokenizer: Any, first: str, second: str, limit: int | None) -> tuple[str, str]:
    """A (first, second) pair with each text cut where truncating the pair to `limit` tokens keeps the same
    tokens. Truncation (`longest_first`) gives the odd token of an odd budget to the longer text, so a cut
    text is kept longer (in tokens) than an uncut partner. When both must be cut, which is longer is not known
    without tokenizing both whole (which `longest_first` itself makes quadratic: a 13,000- and a 45,000-character
    pair took 34 s and 8 GB), so the one with more characters is kept the longer: only an odd budget's last
    token can then differ from a whole-text truncation, and only where the character and token orders differ."""
    if limit is None or not isinstance(first, str) or not isinstance(second, str):
        return first, second
    a, b = head(tokenizer, first, limit), head(tokenizer, second, limit)
    if not (a.cut or b.cut):
        return first, second
    if a.cut and b.cut:
        longer_first = len(first) >= len(second)
        tokens = b.tokens if longer_first else a.tokens
    else:
        longer_first = a.cut
        tokens = len(tokenizer(b.text if a.cut else a.text, add_special_tokens=False)["input_ids"])
    if longer_first:
        return head(tokenizer, first, max(limit, tokens + 1)).text, b.text
    return a.text, head(tokenizer, second, max(limit, tokens + 1)).text


def free_mb(model: Any) -> float:
    """The memory free now where `model` runs: its CUDA device's, else the machine's RAM."""
    from omnirun.hardware import MB, ram_free_mb

    device = getattr(model, "device", None)
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return float(torch.cuda.mem_get_info(device)[0]) / MB
    return ram_free_mb()


def text_tokens(tokenizer: Any, items: list[dict[str, Any]], limit: int | None) -> list[int]:
    """Each item's tokens (special tokens and `text_pair` included); InputError for a text over `limit`, which
    the model cannot take (a text whose start alone is over it is not tokenized whole: `bounds.check_fits`)."""
    counts = []
    for item in items:
        text, pair = item["prompt"], item.get("text_pair")
        check_fits(tokenizer, "the text", text, limit)
        check_fits(tokenizer, "text_pair", pair, limit)
        n = len(tokenizer(text, pair)["input_ids"])
        if limit is not None and n > limit:
            with_pair = " (with its text_pair)" if pair is not None else ""
            raise InputError(
                f"the text{with_pair} has {n:,} tokens, more than the model's context of {limit}; shorten it"
            )
        counts.append(n)
    return counts


def check_audio_forward(model: Any, task: TaskName, items: list[dict[str, Any]], options: TaskConfig) -> None:
    """InputError when one forward pass over the batch's audio (a whole clip; a transcribe chunk when
    `task.chunk_length_s` cuts it) would not fit in the free memory (`bounds.forward_mb`; checked before the
    pass allocates it)."""
    if not items:
        return
    longest = max(len(item["audio"]) for item in items)
    if task == TaskName.transcribe:
        chunk = options_as(options, TranscribeConfig).chunk_length_s
        longest = min(longest, int(chunk * items[0]["sampling_rate"])) if chunk else longest
    need = forward_mb(model.config, longest * (len(items) if task != TaskName.transcribe else 1))
    free = free_mb(model) * media.MEMORY_HEADROOM
    if need is not None and need > free:
        seconds = longest / items[0]["sampling_rate"]
        what = f"audio {media.describe(items[0].get('audio_path', '<audio>'))!r}" if len(items) == 1 else "the audio"
        raise InputError(
            f"{what}: one forward pass over {seconds:,.0f} s needs ~{need:,.0f} MB (the feature encoder's first "
            f"layer: conv_dim[0] floats per conv_stride[0] samples), more than the {free:,.0f} MB free; cut it "
            "into shorter clips, or transcribe with task.chunk_length_s"
        )

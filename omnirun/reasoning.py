"""A reasoning model's output, split into its thinking and its answer (`generation.reasoning`).

Reasoning models write their thinking between delimiters before the answer: `<think>...</think>` (DeepSeek-R1,
Qwen3, QwQ, SmolLM3, Phi-4-reasoning), `<seed:think>...</seed:think>` (Seed-OSS), `[THINK]...[/THINK]`
(Magistral), `◁think▷...◁/think▷` (Kimi). A chat template that opens the block itself (DeepSeek-R1's ends the
generation prompt with `<think>\\n`) makes the output start inside the thinking with no opening delimiter, so the
split also works from the closing delimiter alone. These are the delimiters vLLM's reasoning parsers split on
(`deepseek_r1`, `qwen3`, `seed_oss`, `mistral`, `kimi`); a family with another layout (gpt-oss's harmony
channels) is kept as generated.

`auto` splits when the model's chat template names a delimiter (the only sign, before generating, that the model
thinks); `split` always looks for one; `strip` splits and drops the thinking; `keep` leaves the text alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from omnirun.choices import Reasoning


@dataclass(frozen=True)
class Delimiter:
    open: str
    close: str


DELIMITERS = (
    Delimiter("<think>", "</think>"),
    Delimiter("<seed:think>", "</seed:think>"),
    Delimiter("[THINK]", "[/THINK]"),
    Delimiter("◁think▷", "◁/think▷"),
)
"""Most specific first where one contains another (`<seed:think>` is not found as `<think>`)."""


@dataclass(frozen=True)
class Split:
    answer: str
    reasoning: str | None = None
    """The thinking, delimiters removed; None when the output had none."""
    thinking_chars: int = 0
    """How many characters of the generated text the thinking took, delimiters included (what the reasoning
    token count covers)."""


@dataclass(frozen=True)
class Thinking:
    """How one run treats its outputs: the mode resolved against the model, and its delimiter."""

    mode: Reasoning
    delimiter: Delimiter
    opened_by_prompt: bool = False
    """The chat template's generation prompt ends with the opening delimiter: outputs start inside the thinking."""

    def split(self, text: str) -> Split:
        return split(text, self.delimiter, self.opened_by_prompt)


def delimiter_in(template: str | None) -> Delimiter | None:
    """The thinking delimiter a chat template names (None: it names none)."""
    if not template:
        return None
    for delim in sorted(DELIMITERS, key=lambda d: -len(d.open)):
        if delim.open in template or delim.close in template:
            return delim
    return None


def resolve(mode: Reasoning | str, template: str | None, generation_prompt: str | None = None) -> Thinking | None:
    """The run's treatment of outputs: None (keep them as generated) for `keep`, and for `auto` when the chat
    template names no thinking delimiter; `split` / `strip` on a model whose template names none look for
    `<think>`. `generation_prompt` (an empty conversation rendered for generation) says whether the template
    opens the thinking itself."""
    mode = Reasoning(mode)
    if mode == Reasoning.keep:
        return None
    delim = delimiter_in(template)
    if delim is None:
        if mode == Reasoning.auto:
            return None
        delim = DELIMITERS[0]
    opened = bool(generation_prompt) and generation_prompt.rstrip().endswith(delim.open)  # type: ignore[union-attr]
    return Thinking(Reasoning.split if mode == Reasoning.auto else mode, delim, opened)


def format_after(mode: Reasoning | str, template: str | None) -> str | None:
    """Where a response_format starts for a model with chat template `template`: after the closing thinking
    delimiter when the run splits or strips the thinking (the answer is what the format constrains); None (from
    the first token) otherwise."""
    thinking = resolve(mode, template)
    return thinking.delimiter.close if thinking is not None else None


def split(text: str, delim: Delimiter, opened_by_prompt: bool = False) -> Split:
    """`text` as thinking and answer. The thinking ends at the first closing delimiter; it starts at the opening
    one, which may only be preceded by whitespace (or be absent: the prompt opened it, or the template put it
    there). With an opening delimiter (or `opened_by_prompt`) but no closing one, the thinking never ended (the
    token budget ran out): all of it is thinking and the answer is empty. Without either, there is no thinking."""
    stripped = text.lstrip()
    starts_open = stripped.startswith(delim.open)
    end = text.find(delim.close)
    if end < 0:
        if not (starts_open or opened_by_prompt):
            return Split(text)
        body = stripped[len(delim.open) :] if starts_open else text
        return Split("", body.strip(), len(text))
    head = text[:end]
    lead = head.lstrip()
    if lead.startswith(delim.open):
        head = lead[len(delim.open) :]
    elif delim.open in head:  # an answer before the thinking: not this layout
        return Split(text)
    stop = end + len(delim.close)
    return Split(text[stop:].lstrip(), head.strip(), stop)


def token_split(ids: list[int], decode: Callable[[list[int]], str], chars: int) -> int:
    """How many of the generated tokens `ids` the first `chars` characters of their decoded text take: the
    fewest leading tokens whose text is at least that long (a binary search over prefixes, O(log n) decodes)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= chars:
            hi = mid
        else:
            lo = mid + 1
    return lo

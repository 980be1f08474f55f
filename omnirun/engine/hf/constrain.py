"""Constrained decoding on the Transformers backend: `response_format` enforced by a logits processor that
`generate` (and the stream's copy of its loop) runs with its own processors.

`generate` puts custom processors after its own and before the sampling warpers (temperature, top-k, top-p), so
the mask applies after the repetition penalty and min_new_tokens and before a warper could drop every token the
format allows. Each row of a batch has its own matcher, or none (free text); the masks of a step are computed
for every constrained row and applied to the batch at once. When another rule leaves none of the allowed tokens
(min_new_tokens forbidding the end-of-sequence token a finished format needs), the format wins: its allowed
tokens become equally likely. Beam search is refused (beams reorder rows between steps). A reasoning model's
format applies after its thinking (`generation.reasoning`, `omnirun.reasoning.format_after`).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from omnirun import reasoning
from omnirun.config import GenerationConfig
from omnirun.structured import Grammars, RowConstraints

_GRAMMARS: weakref.WeakKeyDictionary[Any, dict[tuple[int, tuple[int, ...]], Grammars]] = weakref.WeakKeyDictionary()
"""tokenizer -> {(vocabulary width, end-of-sequence ids): its Grammars}: each format compiled once per tokenizer."""


def processors(
    model: Any,
    tokenizer: Any,
    formats: Sequence[dict[str, Any] | None],
    params: GenerationConfig,
    eos: set[int],
) -> list[Any]:
    """The logits processors that keep each row in its format (none when no row has one). ValueError naming the
    problem when the request cannot be constrained; FormatError when a format does not compile."""
    if all(f is None for f in formats):
        return []
    if params.num_beams > 1:
        raise ValueError(
            f"response_format cannot be enforced under beam search (num_beams={params.num_beams}); set num_beams=1"
        )
    after = reasoning.format_after(params.reasoning, getattr(tokenizer, "chat_template", None))
    return [GrammarProcessor(grammars(model, tokenizer, eos).rows(formats, after))]


def grammars(model: Any, tokenizer: Any, eos: set[int]) -> Grammars:
    """The compiled-format cache of `tokenizer`, made on first use (about a second for a 50k-token vocabulary)."""
    try:
        import llguidance.hf
    except ImportError as exc:
        raise ValueError(f"response_format needs the llguidance package ({exc}); pip install llguidance") from None
    width = vocab_width(model, tokenizer)
    key = (width, tuple(sorted(eos)))
    per_tokenizer = _GRAMMARS.setdefault(tokenizer, {})
    if key not in per_tokenizer:
        try:
            lltokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=width, eos_token=list(key[1]))
        except ValueError as exc:
            raise ValueError(
                f"response_format needs a fast (Rust) tokenizer; {type(tokenizer).__name__} is not one ({exc})"
            ) from None
        per_tokenizer[key] = Grammars(lltokenizer, key[1])
    return per_tokenizer[key]


def vocab_width(model: Any, tokenizer: Any) -> int:
    """How many logits the model produces per step (its output embedding's rows; at least the tokenizer's size)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    rows = int(weight.shape[0]) if weight is not None and weight.dim() == 2 else 0
    return max(rows, len(tokenizer))


class GrammarProcessor:
    """A Transformers logits processor over a batch's `RowConstraints`: each call first feeds every row the token
    it took at the previous step (the first call sees the prompt), then masks what each constrained row may not
    take next."""

    def __init__(self, rows: RowConstraints) -> None:
        self.rows = rows
        self.started = False

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.started:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self.rows.advance(row, int(token))
        self.started = True
        live = self.rows.live()
        if not live:
            return scores
        allowed = torch.from_numpy(self.rows.masks(live, scores.shape[-1])).to(scores.device)
        index = torch.tensor(live, device=scores.device)
        masked = scores[index].masked_fill(~allowed, float("-inf"))
        dead = torch.isneginf(masked).all(dim=-1)
        if bool(dead.any()):  # nothing the format allows survived another processor: the format wins
            masked[dead] = torch.zeros_like(masked[dead]).masked_fill(~allowed[dead], float("-inf"))
        scores = scores.clone()
        scores[index] = masked
        return scores

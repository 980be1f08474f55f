"""CPU speed-ups applied to a loaded model, and the output-quality check that goes with them.

Quality measure (`agreement`): greedy continuations of a fixed prompt set, reference (fp32 Transformers)
against candidate (int8, llama.cpp, ...):
- `teacher_forced`: the reference's prompt + continuation is fed to the candidate; the share of continuation
  positions where the candidate's greedy next token equals the reference's token. One early difference
  does not cascade, so this is the per-step agreement.
- `prefix`: free-running greedy; the mean share of tokens before the first difference (1.0 = identical).
- `exact`: the share of prompts whose continuations are identical.
"""

from __future__ import annotations

import logging
import statistics
import warnings
from dataclasses import dataclass
from typing import Any, Protocol

from omnirun.config import GenerationConfig
from omnirun.engine.base import Completion

log = logging.getLogger(__name__)


def quantize_int8(model: Any) -> Any:
    """Replace every `nn.Linear` of `model` in place with a dynamic int8 Linear: int8 weights (per output
    channel), activations quantized on the fly per call, fp32 accumulation. CPU only."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; the API works
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def is_int8(model: Any) -> bool:
    """Whether `quantize_int8` has been applied to `model`."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


class Scorer(Protocol):
    """What the agreement check needs from an engine."""

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]: ...
    def argmax_next(self, ids: list[int]) -> list[int]: ...


@dataclass
class Agreement:
    teacher_forced: float
    """Share of reference positions where the candidate's greedy next token matches (teacher forcing)."""
    prefix: float
    """Mean share of each free-running greedy continuation before the first differing token."""
    exact: float
    """Share of prompts whose free-running continuations are identical."""
    prompts: int
    positions: int
    """Reference continuation tokens compared under teacher forcing."""


def agreement(reference: Scorer, candidate: Scorer, prompts: list[list[int]], new_tokens: int) -> Agreement:
    """Greedy agreement of `candidate` with `reference` on token-id prompts (see the module docstring)."""
    params = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, temperature=1.0, top_p=1.0, top_k=0)
    matched = positions = exact = 0
    prefixes = []
    for ids in prompts:
        ref = reference.generate_ids([ids], params)[0].token_ids
        cand = candidate.generate_ids([ids], params)[0].token_ids
        prefixes.append(common_prefix(ref, cand) / max(len(ref), len(cand), 1))
        exact += ref == cand
        predicted = candidate.argmax_next(ids + ref)[len(ids) - 1 : len(ids) - 1 + len(ref)]
        matched += sum(p == r for p, r in zip(predicted, ref, strict=True))
        positions += len(ref)
    return Agreement(
        teacher_forced=matched / positions if positions else 1.0,
        prefix=statistics.fmean(prefixes) if prefixes else 1.0,
        exact=exact / len(prompts) if prompts else 1.0,
        prompts=len(prompts),
        positions=positions,
    )


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n

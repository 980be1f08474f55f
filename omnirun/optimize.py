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

import statistics
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from omnirun.config import GenerationConfig
from omnirun.engine.base import Completion

GROUP = 32
"""Weights per int4 group: the block size of GGUF's Q4_0/Q4_1."""
DECODE_ROWS = 4
"""Up to this many input rows (single-stream decoding) the int4 copy is used; above it, fp32 matmuls are faster."""


def int4_grid(weight: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(codes, scale, min) when every group of `group` weights of each row lies exactly on 16 evenly spaced
    levels, as weights dequantized from a Q4_0/Q4_1 GGUF do; None otherwise (or when the shape does not fit)."""
    rows, cols = weight.shape
    if cols % group:
        return None
    w = weight.detach().float().reshape(rows, cols // group, group)
    low, high = w.amin(-1), w.amax(-1)
    scale = (high - low) / 15
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.clamp(torch.round((w - low[..., None]) / safe[..., None]), 0, 15)
    error = (codes * scale[..., None] + low[..., None] - w).abs().amax()
    if error > 1e-4 * float(scale.abs().amax()) + 1e-12:
        return None
    return codes.to(torch.int32).reshape(rows, cols), scale, low


def add_int4_decode(model: Any) -> int:
    """Give every Linear layer whose weights sit exactly on a 4-bit grid an int4 copy for decoding (see
    `Int4DecodeLinear`); the output head and layers tied to the embedding keep fp32. Returns the layers changed."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    changed = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or child is output or child.weight.device.type != "cpu":
                continue
            grid = int4_grid(child.weight)
            if grid is not None:
                setattr(parent, name, Int4DecodeLinear(child, *grid))
                changed += 1
    return changed


def int4_decode_layers(model: Any) -> int:
    """How many layers of `model` carry an int4 decoding copy."""
    return sum(isinstance(m, Int4DecodeLinear) for m in model.modules())


class Int4DecodeLinear(torch.nn.Linear):
    """A Linear that keeps its fp32 weight for prefill and batches and adds an exact int4 copy (groups of 32,
    16 levels, bf16 scales) for calls of at most DECODE_ROWS rows: single-stream decoding reads every weight
    from memory once per token, and 4-bit codes are 8x fewer bytes than fp32."""

    def __init__(self, linear: torch.nn.Linear, codes: torch.Tensor, scale: torch.Tensor, low: torch.Tensor) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
        zero = low + 8 * scale  # the kernel computes (code - 8) * scale + zero
        self.register_buffer("scale_zero", torch.stack([scale, zero], -1).transpose(0, 1).contiguous().bfloat16())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > DECODE_ROWS or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, x.shape[-1]).to(torch.bfloat16)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP, self.scale_zero)
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


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

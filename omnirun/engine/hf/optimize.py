"""CPU speed-ups applied to a loaded Transformers model, and the output-quality check that goes with them.

`add_int4_decode`: Linear layers whose fp32 weights lie exactly on a 4-bit grid (weights dequantized from a
Q4_1 GGUF, like the bundled SmolLM2's dense copy) get an int4 copy used for single-stream decoding, where
reading 8x fewer bytes per token wins; prefill and batches keep the fp32 weights. Lossless in the weights
(activations enter the int4 kernel as bf16); the output head then decodes from a bf16 copy (not lossless: see
`Bf16DecodeLinear`). Rejected here after measuring: torch dynamic int8
(`quantize_dynamic`, ~1.6x faster decoding but per-tensor activation scales wreck the prompt's outlier tokens:
~35% teacher-forced agreement with fp32) and whole-model bf16 (not faster on every run of this CPU).

Quality measure (`agreement`): greedy continuations of a fixed prompt set, reference (fp32 Transformers)
against a candidate engine:
- `teacher_forced`: the reference's prompt + continuation is fed to the candidate in one forward pass; the
  share of continuation positions where the candidate's greedy next token equals the reference's token. One
  early difference does not cascade. (For int4 decoding copies this pass runs the fp32 prefill path, so it
  scores 1.0 by construction; `prefix` and `exact` measure their decoding.)
- `prefix`: free-running greedy; the mean share of tokens before the first difference (1.0 = identical).
- `exact`: the share of prompts whose continuations are identical.
- `divergence_margin`: at each first difference, the reference's logit of its own token minus its logit of the
  candidate's token; the largest over prompts. Small values (a few tenths) mean the paths only part at
  near-ties, where any numerical change (bf16, quantized activations, another kernel) can flip a greedy choice.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import contextmanager
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
    levels, as weights dequantized from a Q4_1 GGUF do; None otherwise (or when the shape does not fit).
    A few rows are checked first, so ordinary weights are turned down without a pass over the whole matrix."""
    if weight.shape[1] % group or weight.dtype != torch.float32 or grid_codes(weight[:4], group) is None:
        return None
    return grid_codes(weight, group)


def grid_codes(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    rows, cols = weight.shape
    w = weight.detach().reshape(rows, cols // group, group)
    low, high = torch.aminmax(w, dim=-1)
    scale = (high - low) / 15
    step = torch.where(scale > 0, scale, torch.ones_like(scale)).unsqueeze(-1)
    codes = (w - low.unsqueeze(-1)).div_(step).round_().clamp_(0, 15)
    error = codes.mul(step).add_(low.unsqueeze(-1)).sub_(w).abs_().amax()
    if error > 1e-4 * float(scale.amax()) + 1e-12:
        return None
    return codes.to(torch.int32).reshape(rows, cols), scale, low


def add_int4_decode(model: Any) -> int:
    """Give every Linear layer whose weights sit exactly on a 4-bit grid an int4 copy for decoding (see
    `Int4DecodeLinear`); when any did (the weights came from a 4-bit quantized file), the output head gets a
    bf16 copy for decoding (`Bf16DecodeLinear`). Returns the int4 layers."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    changed = 0
    head: tuple[torch.nn.Module, str, Any] | None = None  # (parent, attribute, the output Linear)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or child.weight.device.type != "cpu":
                continue
            if child is output:
                head = (parent, name, child)
                continue
            grid = int4_grid(child.weight)
            if grid is not None:
                setattr(parent, name, Int4DecodeLinear(child, *grid))
                changed += 1
    if changed and head is not None and head[2].weight.dtype == torch.float32:
        parent, name, linear = head
        setattr(parent, name, Bf16DecodeLinear(linear))
    return changed


@contextmanager
def plain_linears(model: Any) -> Iterator[Any]:
    """The model with its decoding copies swapped for plain Linear layers (same weights) while the block runs:
    for tracing (ONNX export), where the copies' row-count branch cannot be followed."""
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (Int4DecodeLinear, Bf16DecodeLinear)):
                plain = torch.nn.Linear(child.in_features, child.out_features, bias=False, device="meta")
                plain.weight, plain.bias = child.weight, child.bias
                setattr(parent, name, plain)
                swapped.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def int4_decode_layers(model: Any) -> int:
    """How many layers of `model` carry an int4 decoding copy."""
    return sum(isinstance(m, Int4DecodeLinear) for m in model.modules())


class Int4DecodeLinear(torch.nn.Linear):
    """A Linear that keeps its fp32 weight for prefill and batches and adds an exact int4 copy (groups of 32,
    16 levels, bf16 scales) for calls of at most DECODE_ROWS rows: single-stream decoding reads every weight
    from memory once per token, and 4-bit codes are 8x fewer bytes than fp32."""

    packed: torch.Tensor
    scale_zero: torch.Tensor

    def __init__(self, linear: torch.nn.Linear, codes: torch.Tensor, scale: torch.Tensor, low: torch.Tensor) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        # not persistent: copies of `weight`, kept out of state_dict() so a saved model is the plain checkpoint
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1), persistent=False)
        zero = low + 8 * scale  # the kernel computes (code - 8) * scale + zero
        scale_zero = torch.stack([scale, zero], -1).transpose(0, 1).contiguous().bfloat16()
        self.register_buffer("scale_zero", scale_zero, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > DECODE_ROWS or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(rows, x.shape[-1]).to(torch.bfloat16)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP, self.scale_zero)
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class Bf16DecodeLinear(torch.nn.Linear):
    """The output head of a model whose layers decode from int4 copies: a bf16 copy of its weight for calls of
    at most DECODE_ROWS rows. The head is the largest single matrix of a small model (49152 x 576 for SmolLM2,
    ~20% of decoding time in fp32); bf16 reads half the bytes. The fp32 weight (tied to the embedding or not)
    stays for prefill and batches. Not exact: measured with `agreement`, decoding then parts from fp32 only at
    near-ties (largest fp32 logit margin at a parting ~0.1, against ~0.3 for a whole bf16 model)."""

    weight_bf16: torch.Tensor

    def __init__(self, linear: torch.nn.Linear) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.register_buffer("weight_bf16", linear.weight.detach().bfloat16(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > DECODE_ROWS or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        y = F.linear(x.to(torch.bfloat16), self.weight_bf16).to(x.dtype)
        return y if self.bias is None else y + self.bias


class Scorer(Protocol):
    """What the agreement check needs from an engine."""

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]: ...
    def argmax_next(self, ids: list[int]) -> list[int]: ...


class Reference(Scorer, Protocol):
    def next_logits(self, ids: list[int]) -> Any: ...


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
    divergence_margin: float | None
    """Largest reference logit gap (its token minus the candidate's) at a first difference; None if none."""


def agreement(reference: Reference, candidate: Scorer, prompts: list[list[int]], new_tokens: int) -> Agreement:
    """Greedy agreement of `candidate` with `reference` on token-id prompts (see the module docstring)."""
    params = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, temperature=1.0, top_p=1.0, top_k=0)
    matched = positions = exact = 0
    prefixes, margins = [], []
    for ids in prompts:
        ref = reference.generate_ids([ids], params)[0].token_ids
        cand = candidate.generate_ids([ids], params)[0].token_ids
        k = common_prefix(ref, cand)
        prefixes.append(k / max(len(ref), len(cand), 1))
        exact += ref == cand
        if k < min(len(ref), len(cand)):
            logits = reference.next_logits(ids + ref[:k])
            margins.append(float(logits[ref[k]] - logits[cand[k]]))
        predicted = candidate.argmax_next(ids + ref)[len(ids) - 1 : len(ids) - 1 + len(ref)]
        matched += sum(p == r for p, r in zip(predicted, ref, strict=True))
        positions += len(ref)
    return Agreement(
        teacher_forced=matched / positions if positions else 1.0,
        prefix=statistics.fmean(prefixes) if prefixes else 1.0,
        exact=exact / len(prompts) if prompts else 1.0,
        prompts=len(prompts),
        positions=positions,
        divergence_margin=max(margins) if margins else None,
    )


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n

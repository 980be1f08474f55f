"""The CPU paths for a Hugging Face model side by side: plain Transformers fp32 (the baseline), and omnirun's
onnxruntime backend with fp32, int8 and int4 (MatMulNBits) weights.

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
  8 chat prompts x 32 tokens), plus free-running prefix and exact-match shares.

    python benchmarks/cpu_paths.py              # 3 repeats, ~10 minutes on 2 cores
    python benchmarks/cpu_paths.py --quick      # 1 repeat, short outputs: a smoke run

Writes benchmarks/results/cpu_paths.json (`--json PATH` elsewhere). Run it on a quiet machine.
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
CONTENDERS = ("transformers-fp32", "onnxruntime-fp32", "onnxruntime-int8", "onnxruntime-int4")
PRECISION = {"onnxruntime-fp32": None, "onnxruntime-int8": "int8", "onnxruntime-int4": "int4"}
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
    return {"repeats": 3, "decode_tokens": 64, "batch_prompts": 32, "batch_tokens": 64, "quality": (8, 32)}


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
    """omnirun's onnxruntime backend at one precision (the export is made before the timed children run)."""

    def __init__(self, path: str, precision: str | None) -> None:
        from omnirun.config import Backend, GenerationConfig, HardwareConfig, ModelConfig, Quantization
        from omnirun.engine.build import build

        quantization = None if precision is None else Quantization(precision)
        hardware = HardwareConfig(backend=Backend.onnxruntime, device="cpu", quantization=quantization)
        self.engine = build(ModelConfig(name=path), hardware)
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
    runner: Any = Baseline(cfg["model_dir"]) if name == "transformers-fp32" else Ort(cfg["model_dir"], PRECISION[name])
    load_s = getattr(runner, "load_s", time.perf_counter() - start)
    text = runner.chat(DECODE_PROMPT)
    runner.generate([text], 4)  # warm-up, excluded
    n = cfg["decode_tokens"]
    first, e2e, _ = runner.generate([text], n)
    texts = [runner.chat(p) for p in batch_prompts(cfg["batch_prompts"])]
    runner.generate(texts[:2], 2)  # warm-up of the batched path
    _, batch_s, batch_tokens = runner.generate(texts, cfg["batch_tokens"])
    return {
        "contender": name,
        "load_s": load_s,
        "decode_tok_s": (n - 1) / (e2e - first),
        "ttft_ms": first * 1e3,
        "batch_tok_s": batch_tokens / batch_s,
        "batch_tokens": batch_tokens,
        "peak_rss_mb": peak_rss_mb(),
    }


def quality(cfg: dict[str, Any]) -> dict[str, Any]:
    """Greedy agreement of each onnxruntime path with fp32 Transformers on the same token ids."""
    from dataclasses import asdict

    from omnirun.engine import TransformersEngine
    from omnirun.engine.hf import optimize

    reference = TransformersEngine(cfg["model_dir"], optimize=False).load_model()
    count, tokens = cfg["quality"]
    prompts = [
        reference.render_chat([{"role": "user", "content": f"Explain {t} in two sentences."}]) for t in TOPICS[:count]
    ]
    ids = [reference.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = {}
    for name, precision in PRECISION.items():
        engine = Ort(cfg["model_dir"], precision).engine
        mine = [engine.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        out[name] = {"same_prompt_ids": mine == ids, **asdict(optimize.agreement(reference, engine, ids, tokens))}
        engine.unload_model()
    return out


def prepare(cfg: dict[str, Any]) -> dict[str, Any]:
    """Export both precisions once (timed: the first load), so the contenders' loads are cached ones."""
    firsts = {}
    for name, precision in PRECISION.items():
        firsts[name] = Ort(cfg["model_dir"], precision).load_s
    return {"first_load_s": firsts}


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
    medians = {
        name: {k: statistics.median(s[k] for s in samples if s["contender"] == name) for k in keys}
        for name in CONTENDERS
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
    for name in CONTENDERS:
        m = med[name]
        a = f"{agree[name]['teacher_forced']:.3f}" if name in agree else "1 (reference)"
        lines.append(
            f"| {name} | {m['decode_tok_s']:.1f} | {m['batch_tok_s']:.1f} | {a} | {m['load_s']:.2f} | "
            f"{m['peak_rss_mb']:.0f} |"
        )
    lines += ["", "| path | target | measured | wanted | met |", "|---|---|---|---|---|"]
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
    for r in range(cfg["repeats"]):
        for name in CONTENDERS[r % len(CONTENDERS) :] + CONTENDERS[: r % len(CONTENDERS)]:
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
    log(f"wrote {args.json}")


def log(message: str) -> None:
    print(f"[cpu_paths] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()

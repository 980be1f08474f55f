"""The GPU benchmark: plain Transformers `generate` against omnirun's automatic choice, and Transformers' continuous
batching, on a Qwen2.5-0.5B-shaped model with random weights (built from its config: no hub, no download).

Workloads, output lengths forced (`min_new_tokens = max_new_tokens`; continuous batching has no end token):
- decode: one prompt, bs=1: decode tok/s = (new tokens - 1) / (end-to-end - time to first token), medians over
  repeats after a warm-up; `plain` is `AutoModelForCausalLM.from_pretrained` + `generate` in the dtype omnirun's
  plan takes on the card (bf16 on compute capability 8.0+), `omnirun` is `hardware=auto` through the engine API;
- throughput: 256 prompts of mixed lengths (32-512 tokens), 128 new tokens each: output tok/s over the whole set,
  prefill included. `plain-padded` is one left-padded `generate` call; `omnirun` runs it as task=batch does
  (sorted by length, the plan's batch size: `compare.Omnirun.batch`); `continuous` is Transformers'
  `model.generate_batch` (its ContinuousBatchingManager; its first call, which sizes the cache and captures
  CUDA graphs, is a warm-up and not timed);
- the memory-bandwidth limit: a 1 GiB device-to-device copy timed with CUDA events (read + write bytes / s,
  median of 10), and limit tok/s = bandwidth / bytes of weights read per token (every parameter once). Each
  contender's `vs_limit` is its tok/s / that limit: at bs=1 the fraction of the card's bandwidth it reaches;
  batched rows share each weight read, so their `vs_limit` can exceed 1.

The tokenizer is the small byte-level BPE trained in-process (`tests/tiny_models.build_tokenizer`): prompts are
its tokens; the model's vocabulary keeps Qwen2.5's 151,936 rows, so the output head costs what it costs.
Each contender runs in its own child process, one at a time; CUDA timings are synchronized; the load average
is recorded before and after. `--dry-run` runs the same code on the CPU with a tiny model and a handful of
prompts (numbers meaningless, shape real).

    python benchmarks/gpu_bench.py --work DIR --json DIR/bench.json [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from compare import FirstToken, Omnirun, peak_rss_mb

QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
}
"""Qwen/Qwen2.5-0.5B-Instruct's config.json: the architecture; the weights are random."""
TINY = {**QWEN25_05B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "vocab_size": 1024}  # fmt: skip
"""The dry run's model: the same architecture, small."""
ROLES = ("plain", "omnirun", "continuous")
"""The child processes, one contender each (`plain` serves both plain rows), run in this order."""
CONTENDERS = {"decode": ("plain", "omnirun"), "throughput": ("plain-padded", "omnirun", "continuous")}
"""Every contender of each workload: a row of the results table each."""


def settings(dry_run: bool) -> dict[str, Any]:
    if dry_run:
        return {"dry_run": True, "decode_tokens": 8, "decode_repeats": 2, "prompts": 6, "prompt_tokens": (4, 24),
                "batch_tokens": 4, "batch_repeats": 1, "copy_mib": 64, "child_s": 300}  # fmt: skip
    return {"dry_run": False, "decode_tokens": 128, "decode_repeats": 5, "prompts": 256, "prompt_tokens": (32, 512),
            "batch_tokens": 128, "batch_repeats": 2, "copy_mib": 1024, "child_s": 150}  # fmt: skip


# ------------------------------------------------------------------------------------------------- the model
def build_model(folder: Path, dry_run: bool) -> Path:
    """Save the random model (safetensors, bf16 on a GPU) and the tokenizer into `folder` (once)."""
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    import transformers

    from tiny_models import build_tokenizer

    tokenizer = build_tokenizer()
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    config = transformers.Qwen2Config(**{**(TINY if dry_run else QWEN25_05B), **ids})
    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype(torch))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(folder)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return folder


def dtype(torch: Any) -> Any:
    """The dtype omnirun's plan takes: bf16 on GPUs that have it, else fp16; fp32 on the CPU."""
    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def prompts(tokenizer: Any, count: int, lo: int, hi: int) -> list[str]:
    """`count` prompts of about [lo, hi] tokens each (drawn with a fixed seed): the same every run."""
    from tiny_models import corpus

    rng, words = random.Random(0), " ".join(corpus()).split()
    out = []
    for i in range(count):
        want = rng.randint(lo, hi)
        text = " ".join(words[(i * 31 + j) % len(words)] for j in range(want))  # a word is at least one token
        ends = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        out.append(text[: ends[want - 1][1]])
    return out


# ------------------------------------------------------------------------------------------- child: contenders
def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Plain:
    """Plain Transformers, as a user script would do it on the card: `from_pretrained`, `.to(device)`, `generate`."""

    def __init__(self, path: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch, self.device = torch, "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype(torch))
        self.model = model.to(self.device)

    def generate(self, texts: list[str], n: int) -> tuple[float, float, int]:
        """(ttft, e2e, output tokens) of one `generate` call over `texts`, length forced to `n`."""
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        timer = FirstToken()
        sync()
        start = time.perf_counter()
        with self.torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, streamer=timer)
        sync()
        e2e = time.perf_counter() - start
        return (timer.at - start) if timer.at else e2e, e2e, int(out[:, enc["input_ids"].shape[1] :].numel())

    def continuous(self, texts: list[str], n: int, repeats: int) -> list[tuple[float, int]]:
        """`model.generate_batch` over the token ids: one untimed call (cache sizing, graph capture), then timed."""
        from transformers import GenerationConfig
        from transformers.generation import ContinuousBatchingConfig

        ids = [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        config = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=-1, pad_token_id=0)
        # On a GPU the cache is sized from free memory; on the CPU (the dry run) that would take most of the RAM.
        cb = None if self.device == "cuda" else ContinuousBatchingConfig(num_blocks=16, max_batch_tokens=256)
        runs = []
        for _ in range(repeats + 1):
            sync()
            start = time.perf_counter()
            out = self.model.generate_batch(
                inputs=ids, generation_config=config, continuous_batching_config=cb, persistent_manager=True
            )
            sync()
            runs.append((time.perf_counter() - start, sum(len(r.generated_tokens) for r in out.values())))
        self.model.destroy_cached_continuous_batching_manager()
        return runs[1:]

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())


def decode(runner: Any, text: str, cfg: dict[str, Any]) -> float:
    """Median bs=1 decode tok/s after a warm-up."""
    n = cfg["decode_tokens"]
    runner.generate([text], 4)  # warm-up, excluded
    rates = []
    for _ in range(cfg["decode_repeats"]):
        first, e2e, _ = runner.generate([text], n)
        rates.append((n - 1) / (e2e - first))
    return statistics.median(rates)


def child(role: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """One contender in its own process: load, warm up, then its workloads."""
    model_dir, n = cfg["model_dir"], cfg["batch_tokens"]
    if role == "omnirun":
        runner: Any = Omnirun(model_dir)
        texts = prompts(runner.engine.tokenizer, cfg["prompts"], *cfg["prompt_tokens"])
        out: dict[str, Any] = {"decode_tok_s": decode(runner, texts[0], cfg), "plan": runner.describe()}
        runner = runner.for_batch()
        runner.generate(texts[:2], 2)  # warm-up of the batched path
        runs = [runner.batch(texts, n) for _ in range(cfg["batch_repeats"])]
        out["batch_plan"] = runner.describe()
    else:
        runner = Plain(model_dir)
        texts = prompts(runner.tokenizer, cfg["prompts"], *cfg["prompt_tokens"])
        out = {"weight_bytes": runner.weight_bytes(), "dtype": str(runner.model.dtype).removeprefix("torch.")}
        if role == "continuous":
            try:
                runs = runner.continuous(texts, n, cfg["batch_repeats"])
            except Exception as exc:  # recorded, not fatal: the other contenders still count
                return {**out, "skipped": f"generate_batch failed: {type(exc).__name__}: {str(exc)[:300]}"}
        else:
            out["decode_tok_s"] = decode(runner, texts[0], cfg)
            runner.generate(texts[:2], 2)  # warm-up of the batched path
            runs = [runner.generate(texts, n)[1:] for _ in range(cfg["batch_repeats"])]
    lengths = sorted(len(runner_tokens(runner, t)) for t in texts)
    return {
        **out,
        "batch_tok_s": statistics.median(tokens / seconds for seconds, tokens in runs),
        "batch_output_tokens": runs[-1][1],
        "prompt_tokens": {"min": lengths[0], "median": statistics.median(lengths), "max": lengths[-1]},
        "peak_rss_mb": peak_rss_mb(),
        **cuda_peak(),
    }


def runner_tokens(runner: Any, text: str) -> list[int]:
    tokenizer = runner.engine.tokenizer if isinstance(runner, Omnirun) else runner.tokenizer
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def cuda_peak() -> dict[str, Any]:
    import torch

    return {"max_cuda_allocated_mb": torch.cuda.max_memory_allocated() / 2**20} if torch.cuda.is_available() else {}


def bandwidth(cfg: dict[str, Any]) -> dict[str, Any]:
    """Device memory bandwidth: a large copy, (read + written bytes) / s, median of 10 after a warm-up."""
    import torch

    cuda = torch.cuda.is_available()
    size = cfg["copy_mib"] * 2**20
    src = torch.ones(size, dtype=torch.uint8, device="cuda" if cuda else "cpu")
    dst = torch.empty_like(src)
    seconds = []
    for i in range(11):
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            elapsed = begin.elapsed_time(end) / 1e3
        else:
            start = time.perf_counter()
            dst.copy_(src)
            elapsed = time.perf_counter() - start
        if i:  # the first copy is the warm-up
            seconds.append(elapsed)
    device = src.device.type
    del src, dst
    if cuda:
        torch.cuda.empty_cache()  # the contenders' processes plan with the card's free memory
    return {"bytes_per_copy": 2 * size, "gb_s": 2 * size / statistics.median(seconds) / 1e9, "device": device}


# ------------------------------------------------------------------------------------------------ the parent
def run_child(role: str, cfg: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    args = [sys.executable, __file__, "--child", role, json.dumps(cfg)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False, env=env, timeout=cfg["child_s"])
    except subprocess.TimeoutExpired:
        return {"skipped": f"child {role} ran past its {cfg['child_s']} s limit"}
    if done.returncode != 0:
        return {"skipped": f"child {role} exited {done.returncode}: {done.stderr.strip()[-1500:]}"}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def summarize(samples: dict[str, dict[str, Any]], band: dict[str, Any]) -> dict[str, Any]:
    """Each workload's contenders as tok/s, ratio to plain in the same run, and tok/s over the bandwidth limit."""
    samples = {role: samples.get(role, {"skipped": "not run (the stage ran out of time)"}) for role in ROLES}
    weight_bytes = samples["plain"].get("weight_bytes") or samples["continuous"].get("weight_bytes")
    limit = band["gb_s"] * 1e9 / weight_bytes if weight_bytes else None
    out: dict[str, Any] = {"bandwidth": band, "weight_bytes": weight_bytes, "limit_tok_s": limit}
    sources = {"decode": ("decode_tok_s", {"plain": "plain", "omnirun": "omnirun"})}
    sources["throughput"] = ("batch_tok_s", {"plain-padded": "plain", "omnirun": "omnirun", "continuous": "continuous"})
    for workload, (key, roles) in sources.items():
        rows: dict[str, Any] = {}
        base = samples["plain"].get(key)
        for name, role in roles.items():
            value = samples[role].get(key)
            if value is None:
                rows[name] = {"skipped": samples[role].get("skipped", f"{role} did not report {key}")}
                continue
            rows[name] = {
                "tok_s": value,
                "ratio_to_plain": value / base if base else None,
                "vs_limit": value / limit if limit else None,
            }
        out[workload] = rows
    return out


def machine() -> dict[str, Any]:
    import platform

    import torch
    import transformers

    out: dict[str, Any] = {"gpu": None, "python": platform.python_version(), "torch": torch.__version__}
    out |= {"transformers": transformers.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        out |= {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1)}
        out |= {"compute_capability": f"{props.major}.{props.minor}", "gpu_count": torch.cuda.device_count()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="a folder for the random model (required)")
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument("--build-only", action="store_true", help="build the model (once) and print its folder")
    parser.add_argument("--dry-run", action="store_true", help="the CPU rehearsal: tiny model, a handful of prompts")
    parser.add_argument("--child", nargs=2, metavar=("ROLE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]))))
        return
    if args.work is None:
        parser.error("--work is required")
    cfg = settings(args.dry_run)
    cfg["model_dir"] = str(build_model(args.work / ("tiny-qwen2" if args.dry_run else "qwen2.5-0.5b"), args.dry_run))
    if args.build_only:
        print(cfg["model_dir"])
        return
    if args.json is None:
        parser.error("--json is required (unless --build-only)")
    report: dict[str, Any] = {"machine": machine(), "settings": cfg, "loadavg_before": os.getloadavg()}
    band, samples = bandwidth(cfg), {}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for role in ROLES:  # the file is rewritten after each contender, so a run cut short keeps what finished
        print(f"[gpu_bench] {role}", file=sys.stderr, flush=True)
        samples[role] = run_child(role, cfg)
        report |= summarize(samples, band) | {"samples": samples, "loadavg_after": os.getloadavg()}
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""`task=benchmark`: measure an engine on a controlled workload, phase by phase, reproducibly.

Flow: load the model (timed, memory peak), one cold `generate` (first_generate), `warmup_runs` calls that
are never reported, then measured calls until both `min_iterations` and `min_duration_s` are reached. Each
measured call gives one sample of prefill (time to first token), decode (the rest), generate (end to end)
and, per step, the inter-token latency (per_token). The output length is forced
(min_new_tokens = max_new_tokens) and the actual token counts are reported.
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from omnirun import metrics, outputs
from omnirun.config import BenchmarkConfig, GenerationConfig
from omnirun.engine.base import Completion

SCHEMA_VERSION = 1
PHASES = ("load_model", "first_generate", "prefill", "decode", "per_token", "generate")

DEFINITIONS = {
    "count": "number of samples in the phase",
    "mean, p50, p90, p95, p99": "seconds; percentiles by linear interpolation",
    "stdev": "sample standard deviation, seconds",
    "stdev_pct": "stdev / mean * 100",
    "load_model": "wall time of load_model(): resolve, plan, tokenizer, weights (one sample)",
    "first_generate": "the first generate call after loading, cold (one sample, never in other phases)",
    "prefill": "per measured call: from the call's start until the first new token existed (TTFT)",
    "decode": "per measured call: generate minus prefill, the time to produce the remaining tokens",
    "per_token": "per decoding step after the first: time between consecutive new tokens (inter-token latency)",
    "generate": "per measured call: end-to-end wall time of one generate call over the batch",
    "prefill_tokens_per_s": "input tokens of the batch / prefill mean",
    "decode_tokens_per_s": "batch output tokens after the first of each sequence / decode mean",
    "tokens_per_s": "batch output tokens / generate mean",
    "samples_per_s": "batch size / generate mean",
    "memory.<phase>.max_rss_mb": "peak process RSS during the phase (VmHWM reset at its start, plus a 20 ms sampler)",
    "memory.<phase>.max_cuda_allocated_mb": "torch.cuda.max_memory_allocated after a reset at the phase's start",
    "memory.model_footprint_mb": "model.get_memory_footprint(): parameters and buffers",
    "stability.loadavg_before/after": "1-minute load average before and after the run",
    "stability.steal_pct": "share of CPU time stolen by the hypervisor during the run (/proc/stat), if any",
    "stability.unstable": "true when generate's stdev_pct exceeds benchmark.max_spread_pct or the machine was busy",
}


class BenchEngine(Protocol):
    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]: ...


def phase_stats(values: list[float]) -> dict[str, float]:
    """count, mean, p50, p90, p95, p99, stdev, stdev_pct of a list of seconds."""
    xs = sorted(values)
    mean = statistics.fmean(xs) if xs else 0.0
    stdev = statistics.stdev(xs) if len(xs) > 1 else 0.0
    out = {"count": len(xs), "mean": mean}
    for q in (50, 90, 95, 99):
        out[f"p{q}"] = metrics.quantile(xs, q / 100) if xs else 0.0
    out["stdev"] = stdev
    out["stdev_pct"] = stdev / mean * 100 if mean else 0.0
    return out


def synthetic_prompts(vocab_size: int, special_ids: set[int], batch: int, length: int, seed: int) -> list[list[int]]:
    """`batch` prompts of exactly `length` random token ids (no special tokens), reproducible from `seed`."""
    rng = random.Random(seed)
    allowed = [i for i in range(vocab_size) if i not in special_ids]
    return [[rng.choice(allowed) for _ in range(length)] for _ in range(batch)]


@dataclass
class Loop:
    """What the measuring loop collected."""

    first: list[Completion]
    first_s: float
    calls: list[list[Completion]] = field(default_factory=list)
    warmup_calls: int = 0
    memory: dict[str, metrics.MemoryPeak] = field(default_factory=dict)


def measure(
    engine: BenchEngine,
    batches: Callable[[int], list[list[int]]],
    params: GenerationConfig,
    bench: BenchmarkConfig,
    seed: int,
    clock: Callable[[], float] = time.perf_counter,
) -> Loop:
    """The cold call, the warm-up, then measured calls until both minimums are met (or max_iterations)."""
    with metrics.PeakMemory() as first_mem:
        start = clock()
        first = engine.generate_ids(batches(0), params, seed=seed)
        first_s = clock() - start
    loop = Loop(first, first_s)
    loop.memory["first_generate"] = first_mem
    with metrics.PeakMemory() as gen_mem:
        for i in range(bench.warmup_runs):
            engine.generate_ids(batches(1 + i), params, seed=seed)
            loop.warmup_calls += 1
        began = clock()
        while len(loop.calls) < bench.max_iterations and (
            len(loop.calls) < bench.min_iterations or clock() - began < bench.min_duration_s
        ):
            index = 1 + bench.warmup_runs + len(loop.calls)
            loop.calls.append(engine.generate_ids(batches(index), params, seed=seed))
    loop.memory["generate"] = gen_mem
    return loop


def summarize(loop: Loop, load_s: float | None, load_mem: metrics.MemoryPeak | None) -> dict[str, Any]:
    """Phases with their statistics and throughputs, from the measured calls."""
    prefill, decode, generate, per_token = [], [], [], []
    in_tokens, out_tokens = [], []
    for call in loop.calls:
        c0 = call[0]
        generate.append(c0.e2e_s)
        if c0.ttft_s is not None:
            prefill.append(c0.ttft_s)
            decode.append(c0.e2e_s - c0.ttft_s)
        times = c0.token_times_s
        per_token += [b - a for a, b in itertools.pairwise(times)]
        in_tokens.append(sum(c.input_tokens for c in call))
        out_tokens.append(sum(c.output_tokens for c in call))
    batch = len(loop.calls[0]) if loop.calls else 0
    mean_in = statistics.fmean(in_tokens) if in_tokens else 0.0
    mean_out = statistics.fmean(out_tokens) if out_tokens else 0.0
    phases: dict[str, dict[str, Any]] = {
        "load_model": phase_stats([load_s] if load_s is not None else []),
        "first_generate": phase_stats([loop.first_s]),
        "prefill": phase_stats(prefill),
        "decode": phase_stats(decode),
        "per_token": phase_stats(per_token),
        "generate": phase_stats(generate),
    }
    p, d, g = phases["prefill"]["mean"], phases["decode"]["mean"], phases["generate"]["mean"]
    phases["prefill"]["prefill_tokens_per_s"] = mean_in / p if p else None
    phases["decode"]["decode_tokens_per_s"] = (mean_out - batch) / d if d else None
    phases["generate"]["tokens_per_s"] = mean_out / g if g else None
    phases["generate"]["samples_per_s"] = batch / g if g else None
    memory = {name: _mem(peak) for name, peak in loop.memory.items()}
    if load_mem is not None:
        memory = {"load_model": _mem(load_mem), **memory}
    return {
        "phases": phases,
        "memory": memory,
        "tokens": {
            "batch_size": batch,
            "input_tokens_per_call": mean_in,
            "output_tokens_per_call": mean_out,
            "warmup_calls_excluded": loop.warmup_calls,
        },
    }


def _mem(peak: metrics.MemoryPeak) -> dict[str, float | None]:
    return {
        "max_rss_mb": peak.max_rss_mb,
        "max_cuda_allocated_mb": peak.max_cuda_allocated_mb,
        "max_cuda_reserved_mb": peak.max_cuda_reserved_mb,
    }


def forced_params(gen: GenerationConfig, bench: BenchmarkConfig) -> GenerationConfig:
    """The run's generation settings with the output length forced to benchmark.new_tokens."""
    return replace(gen, max_new_tokens=bench.new_tokens, min_new_tokens=bench.new_tokens, num_beams=1)


def machine_load() -> dict[str, float | None]:
    """1-minute load average and the CPU steal counter (jiffies) where the OS tells."""
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = None
    steal, total = None, None
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        total = float(sum(fields))
        steal = float(fields[7]) if len(fields) > 7 else None
    except (OSError, ValueError):
        pass
    return {"loadavg": load1, "steal": steal, "total": total}


def stability(
    before: dict[str, float | None], after: dict[str, float | None], generate_spread: float, max_spread: float
) -> dict[str, Any]:
    steal_pct = None
    if before["steal"] is not None and after["steal"] is not None and before["total"] and after["total"]:
        elapsed = after["total"] - before["total"]
        steal_pct = (after["steal"] - before["steal"]) / elapsed * 100 if elapsed > 0 else 0.0
    reasons = []
    if generate_spread > max_spread:
        reasons.append(
            f"generate stdev is {generate_spread:.1f}% of its mean (> benchmark.max_spread_pct={max_spread})"
        )
    cores = os.cpu_count() or 1
    if before["loadavg"] is not None and before["loadavg"] > 0.5 * cores + 1:
        reasons.append(
            f"load average {before['loadavg']:.2f} before the run on {cores} cores: another process was busy"
        )
    if steal_pct is not None and steal_pct > 5:
        reasons.append(f"{steal_pct:.1f}% CPU steal")
    return {
        "loadavg_before": before["loadavg"],
        "loadavg_after": after["loadavg"],
        "steal_pct": steal_pct,
        "unstable": bool(reasons),
        "reasons": reasons,
    }


def write_report(run_dir: Path, report: dict[str, Any]) -> None:
    outputs.write_json(run_dir / "benchmark.json", report)
    (run_dir / "benchmark.md").write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    w = report["workload"]
    lines = [
        f"# Benchmark: {report['model']}",
        "",
        f"- workload: {w['source']}, batch {w['batch_size']}, {w['input_tokens_per_call']:.0f} input tokens and "
        f"{w['output_tokens_per_call']:.0f} output tokens per call (forced {w['new_tokens']} per sequence)",
        f"- device: {report['plan']['device']} / {report['plan']['dtype']}"
        f"{' / ' + report['plan']['quantization'] if report['plan'].get('quantization') else ''}",
        f"- {report['phases']['generate']['count']} measured calls after {w['warmup_calls_excluded']} warm-up calls",
        "",
        "| phase | count | mean ms | p50 ms | p90 ms | p99 ms | stdev % | throughput |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in PHASES:
        s = report["phases"][name]
        tp = next((f"{v:,.1f} {k}" for k, v in s.items() if k.endswith("_per_s") and v is not None), "")
        lines.append(
            f"| {name} | {s['count']} | {s['mean'] * 1e3:,.2f} | {s['p50'] * 1e3:,.2f} | {s['p90'] * 1e3:,.2f} | "
            f"{s['p99'] * 1e3:,.2f} | {s['stdev_pct']:.1f} | {tp} |"
        )
    lines += ["", "| memory | max RSS MB | max CUDA allocated MB |", "|---|---|---|"]
    for name, m in report["memory"].items():
        if isinstance(m, dict):
            cuda = "-" if m["max_cuda_allocated_mb"] is None else f"{m['max_cuda_allocated_mb']:,.0f}"
            lines.append(f"| {name} | {m['max_rss_mb']:,.0f} | {cuda} |")
    st = report["stability"]
    verdict = "UNSTABLE: " + "; ".join(st["reasons"]) if st["unstable"] else "stable"
    lines += ["", f"Stability: {verdict} (load average {st['loadavg_before']} before, {st['loadavg_after']} after)."]
    return "\n".join(lines) + "\n"

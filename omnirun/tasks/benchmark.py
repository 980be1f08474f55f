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
from typing import Protocol

from omnirun import rundir
from omnirun.config import BenchmarkConfig, GenerationConfig
from omnirun.engine.base import Completion
from omnirun.errors import ConfigError, InputError
from omnirun.results import timing
from omnirun.results.benchmark import BenchmarkReport, Phase, PhaseMemory, PhaseStats, Stability, Workload, markdown
from omnirun.results.schema import BenchmarkHeadline, MemoryMetrics, RunMetrics, Stats, Status, to_jsonable
from omnirun.tasks.base import Job, render
from omnirun.tasks.records import seed_everything


class BenchEngine(Protocol):
    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]: ...


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
    memory: dict[str, timing.MemoryPeak] = field(default_factory=dict)


def measure(
    engine: BenchEngine,
    batches: Callable[[int], list[list[int]]],
    params: GenerationConfig,
    bench: BenchmarkConfig,
    seed: int,
    clock: Callable[[], float] = time.perf_counter,
) -> Loop:
    """The cold call, the warm-up, then measured calls until both minimums are met (or max_iterations)."""
    with timing.PeakMemory() as first_mem:
        start = clock()
        first = engine.generate_ids(batches(0), params, seed=seed)
        first_s = clock() - start
    loop = Loop(first, first_s)
    loop.memory["first_generate"] = first_mem
    with timing.PeakMemory() as gen_mem:
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


@dataclass
class Summary:
    """The measured phases, memory and token counts of a benchmark loop."""

    phases: dict[Phase, PhaseStats]
    memory: dict[str, PhaseMemory]
    batch_size: int
    input_tokens_per_call: float
    output_tokens_per_call: float
    warmup_calls_excluded: int


def summarize(loop: Loop, load_s: float | None, load_mem: timing.MemoryPeak | None) -> Summary:
    """Phases with their statistics and throughputs, from the measured calls."""
    prefill, decode, generate, per_token = [], [], [], []
    in_tokens, out_tokens = [], []
    for call in loop.calls:
        c0 = call[0]
        generate.append(c0.e2e_s)
        if c0.ttft_s is not None:
            prefill.append(c0.ttft_s)
            decode.append(c0.e2e_s - c0.ttft_s)
        per_token += [b - a for a, b in itertools.pairwise(c0.token_times_s)]
        in_tokens.append(sum(c.input_tokens for c in call))
        out_tokens.append(sum(c.output_tokens for c in call))
    batch = len(loop.calls[0]) if loop.calls else 0
    mean_in = statistics.fmean(in_tokens) if in_tokens else 0.0
    mean_out = statistics.fmean(out_tokens) if out_tokens else 0.0
    phases = {
        Phase.load_model: PhaseStats.of([load_s] if load_s is not None else []),
        Phase.first_generate: PhaseStats.of([loop.first_s]),
        Phase.prefill: PhaseStats.of(prefill),
        Phase.decode: PhaseStats.of(decode),
        Phase.per_token: PhaseStats.of(per_token),
        Phase.generate: PhaseStats.of(generate),
    }
    p, d, g = phases[Phase.prefill].mean, phases[Phase.decode].mean, phases[Phase.generate].mean
    phases[Phase.prefill].prefill_tokens_per_s = mean_in / p if p else None
    phases[Phase.decode].decode_tokens_per_s = (mean_out - batch) / d if d else None
    phases[Phase.generate].tokens_per_s = mean_out / g if g else None
    phases[Phase.generate].samples_per_s = batch / g if g else None
    memory = {name: _mem(peak) for name, peak in loop.memory.items()}
    if load_mem is not None:
        memory = {"load_model": _mem(load_mem), **memory}
    return Summary(phases, memory, batch, mean_in, mean_out, loop.warmup_calls)


def _mem(peak: timing.MemoryPeak) -> PhaseMemory:
    return PhaseMemory(peak.max_rss_mb, peak.max_cuda_allocated_mb, peak.max_cuda_reserved_mb)


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
) -> Stability:
    """Whether the machine was quiet enough for the numbers to mean something, with the reasons if not."""
    steal_pct = None
    b_steal, a_steal, b_total, a_total = before["steal"], after["steal"], before["total"], after["total"]
    if b_steal is not None and a_steal is not None and b_total and a_total:
        elapsed = a_total - b_total
        steal_pct = (a_steal - b_steal) / elapsed * 100 if elapsed > 0 else 0.0
    reasons = []
    if generate_spread > max_spread:
        reasons.append(
            f"generate stdev is {generate_spread:.1f}% of its mean (> benchmark.max_spread_pct={max_spread})"
        )
    cores = os.cpu_count() or 1
    load = before["loadavg"]
    if load is not None and load > 0.5 * cores + 1:
        reasons.append(f"load average {load:.2f} before the run on {cores} cores: another process was busy")
    if steal_pct is not None and steal_pct > 5:
        reasons.append(f"{steal_pct:.1f}% CPU steal")
    return Stability(before["loadavg"], after["loadavg"], steal_pct, bool(reasons), reasons)


def run_benchmark(job: Job) -> RunMetrics:
    """task=benchmark: load (timed), then `measure`; writes benchmark.json/.md and returns the run metrics."""
    cfg, engine, bench = job.cfg, job.engine, job.cfg.benchmark
    before = machine_load()
    with timing.PeakMemory() as load_mem, timing.timed() as load:
        engine.load_model()
    seed_everything(cfg.seed)
    job.write_manifest()
    batches, source = benchmark_batches(job)
    params = forced_params(cfg.generation, bench)
    summary = summarize(measure(engine, batches, params, bench, seed=cfg.seed), load.seconds, load_mem)
    gen = summary.phases[Phase.generate]
    footprint = engine.memory().model_footprint_mb
    counted = engine.parameters()
    report = BenchmarkReport(
        model=cfg.model.name,
        workload=Workload(
            source=source,
            batch_size=bench.batch_size,
            prompt_tokens=bench.prompt_tokens if source == "synthetic" else None,
            new_tokens=bench.new_tokens,
            input_tokens_per_call=summary.input_tokens_per_call,
            output_tokens_per_call=summary.output_tokens_per_call,
            warmup_calls_excluded=summary.warmup_calls_excluded,
        ),
        settings={
            "warmup_runs": bench.warmup_runs,
            "min_iterations": bench.min_iterations,
            "min_duration_s": bench.min_duration_s,
            "do_sample": params.do_sample,
        },
        plan=to_jsonable(engine.plan),
        phases=summary.phases,
        memory=summary.memory,
        model_footprint_mb=footprint,
        stability=stability(before, machine_load(), gen.stdev_pct, bench.max_spread_pct),
    )
    engine.unload_model()
    job.run.write_json(rundir.BENCHMARK_JSON, report.to_json())
    (job.run / rundir.BENCHMARK_MD).write_text(markdown(report))
    print(f"benchmark: {job.run / rundir.BENCHMARK_MD}")
    result = metrics_of(report, summary, load.seconds, time.perf_counter() - job.started)
    if counted is not None:
        result.num_parameters, result.trainable_parameters = counted.total, counted.trainable
    return result


def metrics_of(report: BenchmarkReport, summary: Summary, load_s: float, total_s: float) -> RunMetrics:
    """metrics.json of a benchmark run: its measured calls as the run's samples, plus the headline figures."""
    phases = report.phases
    gen = phases[Phase.generate]
    mem = summary.memory.get("generate", PhaseMemory())
    return RunMetrics(
        status=Status.completed,
        load_model_s=load_s,
        total_s=total_s,
        generation_s=gen.mean * gen.count,
        num_samples=gen.count * summary.batch_size,
        input_tokens=int(summary.input_tokens_per_call * gen.count),
        output_tokens=int(summary.output_tokens_per_call * gen.count),
        output_tokens_per_s=gen.tokens_per_s,
        ttft_ms=stats_ms(phases[Phase.prefill]),
        tpot_ms=stats_ms(phases[Phase.per_token]),
        e2e_ms=stats_ms(gen),
        memory=MemoryMetrics(
            mem.max_rss_mb, mem.max_cuda_allocated_mb, mem.max_cuda_reserved_mb, report.model_footprint_mb
        ),
        benchmark=BenchmarkHeadline(
            prefill_tokens_per_s=phases[Phase.prefill].prefill_tokens_per_s,
            decode_tokens_per_s=phases[Phase.decode].decode_tokens_per_s,
            samples_per_s=gen.samples_per_s,
            generate_p50_ms=gen.p50 * 1e3,
            unstable=report.stability.unstable,
        ),
    )


def stats_ms(phase: PhaseStats) -> Stats | None:
    return Stats(phase.mean, phase.p50, phase.p90, phase.p99).scaled(1e3) if phase.count else None


def benchmark_batches(job: Job) -> tuple[Callable[[int], list[list[int]]], str]:
    """Token-id batches for call number i: synthetic prompts of an exact length, or the real inputs cycled."""
    cfg, engine = job.cfg, job.engine
    size = cfg.benchmark.batch_size
    tok = engine.tokenizer
    if job.data.source in ("jsonl", "dataset"):
        prompts = [render(engine, r, cfg.task, chat=False) for r in job.data.records if r.error is None]
        if not prompts:
            raise InputError("task=benchmark: the input has no usable record")
        ids = [tok(text, add_special_tokens=special)["input_ids"] for text, special in prompts]
        return (lambda i: [ids[(i * size + j) % len(ids)] for j in range(size)]), "inputs"
    context, bench = engine.max_context, cfg.benchmark
    if context and bench.prompt_tokens + bench.new_tokens > context:
        raise ConfigError(
            f"benchmark.prompt_tokens ({bench.prompt_tokens}) + benchmark.new_tokens ({bench.new_tokens}) exceeds "
            f"the model's context ({context}); lower them"
        )
    special = set(tok.all_special_ids)
    batch = synthetic_prompts(len(tok), special, size, bench.prompt_tokens, cfg.seed)
    return (lambda i: batch), "synthetic"

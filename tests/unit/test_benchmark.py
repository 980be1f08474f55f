"""task=benchmark: phases and fields, both repetition minimums, warm-up excluded, rerun, sweeps, compare."""

from __future__ import annotations

from dataclasses import dataclass, field

from omnirun import compare
from omnirun.config import BenchmarkConfig, GenerationConfig
from omnirun.engine.base import Completion
from omnirun.results.benchmark import Phase, PhaseStats
from omnirun.tasks import benchmark


@dataclass
class CountingEngine:
    """A fake engine: counts calls; each call 'takes' `step` seconds on a fake clock."""

    clock: list[float]
    step: float = 0.1
    calls: list[list[list[int]]] = field(default_factory=list)

    def generate_ids(
        self, ids: list[list[int]], params: GenerationConfig, *, seed: int | None = None
    ) -> list[Completion]:
        self.calls.append(ids)
        self.clock[0] += self.step
        times = [self.step * (i + 1) / params.max_new_tokens for i in range(params.max_new_tokens)]
        return [Completion("x", len(p), params.max_new_tokens, "length", self.step, times[0], times) for p in ids]


def run_loop(bench: BenchmarkConfig, step: float = 0.1) -> tuple[benchmark.Loop, CountingEngine]:
    now = [0.0]
    engine = CountingEngine(now, step)
    params = benchmark.forced_params(GenerationConfig(do_sample=False), bench)
    loop = benchmark.measure(engine, lambda i: [[1, 2, 3]], params, bench, seed=0, clock=lambda: now[0])
    return loop, engine


def test_repetitions_respect_both_minimums_and_exclude_warmup() -> None:
    by_count, engine = run_loop(BenchmarkConfig(min_iterations=7, min_duration_s=0.0, warmup_runs=3))
    assert len(by_count.calls) == 7
    assert len(engine.calls) == 1 + 3 + 7  # cold call + warm-up + measured
    by_time, engine = run_loop(BenchmarkConfig(min_iterations=2, min_duration_s=1.0, warmup_runs=2), step=0.1)
    assert len(by_time.calls) >= 10  # 1 s of 0.1 s calls, although 2 iterations were enough by count
    assert len(engine.calls) == 1 + 2 + len(by_time.calls)
    capped, _ = run_loop(BenchmarkConfig(min_iterations=2, min_duration_s=100.0, max_iterations=5))
    assert len(capped.calls) == 5
    summary = benchmark.summarize(by_count, 1.0, None)
    assert summary.phases[Phase.generate].count == 7
    assert summary.warmup_calls_excluded == 3


def test_forced_output_length() -> None:
    params = benchmark.forced_params(GenerationConfig(max_new_tokens=100), BenchmarkConfig(new_tokens=16))
    assert params.max_new_tokens == params.min_new_tokens == 16


def test_synthetic_prompts_are_exact_and_reproducible() -> None:
    a = benchmark.synthetic_prompts(100, {0, 1, 2}, 3, 17, seed=5)
    assert a == benchmark.synthetic_prompts(100, {0, 1, 2}, 3, 17, seed=5)
    assert all(len(p) == 17 and not {0, 1, 2} & set(p) for p in a)


def spread(count: int, stdev_pct: float) -> PhaseStats:
    """A phase with `count` samples and the given relative spread (the other statistics are irrelevant here)."""
    return PhaseStats(count, 1.0, 1.0, 1.0, 1.0, 1.0, stdev_pct / 100, stdev_pct)


def test_compare_noise_band() -> None:
    base = spread(10, 8.0)
    assert compare.noise(base, spread(10, 3.0)) == 8.0
    assert compare.noise(spread(1, 0), base) == compare.SINGLE_SAMPLE_NOISE_PCT
    assert compare.row("j", "m", 1.0, 1.07, 8.0, 10, lower=True).verdict == "no change"
    r = compare.row("j", "m", 1.0, 1.3, 8.0, 10, lower=True)
    assert r.verdict == "worse" and r.regression
    r = compare.row("j", "m", 100.0, 80.0, 5.0, 30, lower=False)  # throughput down 20%: worse, under threshold
    assert r.verdict == "worse" and not r.regression

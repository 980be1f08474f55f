"""benchmark.json as types: phases with their statistics, memory per phase, stability; and benchmark.md."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from omnirun.results.schema import quantile, to_jsonable

SCHEMA_VERSION = 1


class Phase(StrEnum):
    load_model = "load_model"
    first_generate = "first_generate"
    prefill = "prefill"
    decode = "decode"
    per_token = "per_token"
    generate = "generate"


PHASES = tuple(Phase)

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
THROUGHPUTS = ("prefill_tokens_per_s", "decode_tokens_per_s", "tokens_per_s", "samples_per_s")


@dataclass
class PhaseStats:
    """Statistics of one phase, in seconds, with the phase's throughputs where defined."""

    count: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    stdev: float
    stdev_pct: float
    prefill_tokens_per_s: float | None = None
    decode_tokens_per_s: float | None = None
    tokens_per_s: float | None = None
    samples_per_s: float | None = None

    @staticmethod
    def of(values: list[float]) -> PhaseStats:
        xs = sorted(values)
        mean = statistics.fmean(xs) if xs else 0.0
        stdev = statistics.stdev(xs) if len(xs) > 1 else 0.0
        p50, p90, p95, p99 = (quantile(xs, q / 100) if xs else 0.0 for q in (50, 90, 95, 99))
        return PhaseStats(len(xs), mean, p50, p90, p95, p99, stdev, stdev / mean * 100 if mean else 0.0)

    def throughput(self) -> tuple[str, float] | None:
        """The phase's throughput metric (name, value), if it has one."""
        return next(((k, v) for k in THROUGHPUTS if (v := getattr(self, k)) is not None), None)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in to_jsonable(self).items() if k not in THROUGHPUTS or v is not None}
        return out


@dataclass
class PhaseMemory:
    max_rss_mb: float | None = None
    max_cuda_allocated_mb: float | None = None
    max_cuda_reserved_mb: float | None = None


@dataclass
class Stability:
    loadavg_before: float | None
    loadavg_after: float | None
    steal_pct: float | None
    unstable: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class Workload:
    source: str
    """`synthetic` (random token prompts of an exact length) or `inputs` (the run's records, cycled)."""
    batch_size: int
    prompt_tokens: int | None
    new_tokens: int
    input_tokens_per_call: float
    output_tokens_per_call: float
    warmup_calls_excluded: int


@dataclass
class BenchmarkReport:
    """benchmark.json."""

    model: str
    workload: Workload
    settings: dict[str, Any]
    plan: dict[str, Any] | None
    phases: dict[Phase, PhaseStats]
    memory: dict[str, PhaseMemory]
    model_footprint_mb: float | None
    stability: Stability
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "model": self.model,
            "workload": to_jsonable(self.workload),
            "settings": self.settings,
            "plan": to_jsonable(self.plan),
            "phases": {str(k): v.to_json() for k, v in self.phases.items()},
            "memory": {**to_jsonable(self.memory), "model_footprint_mb": self.model_footprint_mb},
            "stability": to_jsonable(self.stability),
            "definitions": DEFINITIONS,
        }

    @staticmethod
    def from_json(obj: dict[str, Any]) -> BenchmarkReport:
        memory = dict(obj.get("memory") or {})
        footprint = memory.pop("model_footprint_mb", None)
        return BenchmarkReport(
            model=obj["model"],
            workload=Workload(**obj["workload"]),
            settings=obj.get("settings", {}),
            plan=obj.get("plan"),
            phases={Phase(k): PhaseStats(**v) for k, v in obj["phases"].items()},
            memory={k: PhaseMemory(**v) for k, v in memory.items() if isinstance(v, dict)},
            model_footprint_mb=footprint,
            stability=Stability(**obj["stability"]),
            schema_version=obj.get("schema_version", SCHEMA_VERSION),
        )

    @staticmethod
    def load(path: Path) -> BenchmarkReport:
        return BenchmarkReport.from_json(json.loads(path.read_text()))


def markdown(report: BenchmarkReport) -> str:
    w, plan = report.workload, report.plan or {}
    quant = plan.get("quantization")
    gen = report.phases[Phase.generate]
    lines = [
        f"# Benchmark: {report.model}",
        "",
        f"- workload: {w.source}, batch {w.batch_size}, {w.input_tokens_per_call:.0f} input tokens and "
        f"{w.output_tokens_per_call:.0f} output tokens per call (forced {w.new_tokens} per sequence)",
        f"- device: {plan.get('device')} / {plan.get('dtype')}{' / ' + quant if quant else ''}",
        f"- {gen.count} measured calls after {w.warmup_calls_excluded} warm-up calls",
        "",
        "| phase | count | mean ms | p50 ms | p90 ms | p99 ms | stdev % | throughput |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in PHASES:
        s = report.phases[name]
        tp = s.throughput()
        shown = f"{tp[1]:,.1f} {tp[0]}" if tp else ""
        lines.append(
            f"| {name} | {s.count} | {s.mean * 1e3:,.2f} | {s.p50 * 1e3:,.2f} | {s.p90 * 1e3:,.2f} | "
            f"{s.p99 * 1e3:,.2f} | {s.stdev_pct:.1f} | {shown} |"
        )
    lines += ["", "| memory | max RSS MB | max CUDA allocated MB |", "|---|---|---|"]
    for phase, m in report.memory.items():
        cuda = "-" if m.max_cuda_allocated_mb is None else f"{m.max_cuda_allocated_mb:,.0f}"
        rss = "-" if m.max_rss_mb is None else f"{m.max_rss_mb:,.0f}"
        lines.append(f"| {phase} | {rss} | {cuda} |")
    st = report.stability
    verdict = "UNSTABLE: " + "; ".join(st.reasons) if st.unstable else "stable"
    lines += ["", f"Stability: {verdict} (load average {st.loadavg_before} before, {st.loadavg_after} after)."]
    return "\n".join(lines) + "\n"

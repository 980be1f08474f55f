"""Timers and memory peaks as context managers, and the run's metrics as a dataclass.

Definitions (also in the README):
- `ttft_ms`: time to first token, from the start of the `generate` call that served a record until its
  first new token existed. Records batched together share their batch's value.
- `tpot_ms`: time per output token after the first, `(e2e - ttft) / (output_tokens - 1)` (vLLM's TPOT).
- `e2e_ms`: end-to-end latency of the `generate` call that served a record (queueing in earlier batches
  excluded).
- `output_tokens_per_s`: total output tokens / wall time of the generation phase (model load excluded).
- `max_rss_mb`: peak resident memory of the process during the run, from a 20 ms sampler and the kernel's
  high-water mark (VmHWM, reset at the start of the run where Linux allows it).
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

MB = 1024**2


@dataclass
class Timer:
    seconds: float = 0.0


@contextmanager
def timed(device: str = "cpu") -> Iterator[Timer]:
    """Wall time of the block; on CUDA the device is synchronized before and after."""
    timer = Timer()
    _sync(device)
    start = time.perf_counter()
    try:
        yield timer
    finally:
        _sync(device)
        timer.seconds = time.perf_counter() - start


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


@dataclass
class MemoryPeak:
    max_rss_mb: float = 0.0
    max_cuda_allocated_mb: float | None = None
    max_cuda_reserved_mb: float | None = None


class PeakMemory:
    """Peak process RSS (sampled every 20 ms, plus VmHWM) and peak CUDA memory while the block runs."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak = MemoryPeak()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MemoryPeak:
        import psutil

        reset_hwm()
        self._process = psutil.Process()
        self.peak.max_rss_mb = self._process.memory_info().rss / MB
        if _cuda():
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, name="omnirun-rss", daemon=True)
        self._thread.start()
        return self.peak

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak.max_rss_mb = max(self.peak.max_rss_mb, self._process.memory_info().rss / MB)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        hwm = read_hwm_mb()
        self.peak.max_rss_mb = max(self.peak.max_rss_mb, hwm or 0.0, self._process.memory_info().rss / MB)
        if _cuda():
            import torch

            self.peak.max_cuda_allocated_mb = torch.cuda.max_memory_allocated() / MB
            self.peak.max_cuda_reserved_mb = torch.cuda.max_memory_reserved() / MB


def _cuda() -> bool:
    """CUDA in use by this process: only possible once torch is imported (a llama.cpp run never imports it)."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_available()


def reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) for this process; False where not allowed."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def read_hwm_mb() -> float | None:
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentiles(values: list[float]) -> dict[str, float] | None:
    """mean, p50, p90, p99 (linear interpolation), or None for no values."""
    if not values:
        return None
    xs = sorted(values)
    return {
        "mean": statistics.fmean(xs),
        "p50": quantile(xs, 0.50),
        "p90": quantile(xs, 0.90),
        "p99": quantile(xs, 0.99),
    }


def quantile(sorted_xs: list[float], q: float) -> float:
    pos = (len(sorted_xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


SCHEMA_VERSION = 1


@dataclass
class RunMetrics:
    status: str
    """`completed`, `failed` or `interrupted`."""
    load_model_s: float | None
    total_s: float
    """Wall time of the whole run: input reading, model load, generation, writing."""
    generation_s: float
    """Wall time of the generation phase alone."""
    num_samples: int
    num_errors: int
    input_tokens: int
    output_tokens: int
    output_tokens_per_s: float | None
    ttft_ms: dict[str, float] | None
    tpot_ms: dict[str, float] | None
    e2e_ms: dict[str, float] | None
    memory: dict[str, float | None] = field(default_factory=dict)
    resumed_records: int = 0
    """Records finished by earlier attempts of a resumed run; not counted in this run's figures."""
    benchmark: dict[str, Any] | None = None
    """task=benchmark only: headline throughputs (the full report is benchmark.json)."""
    schema_version: int = SCHEMA_VERSION
    error: str | None = None


def summarize(
    results: list[dict[str, Any]],
    *,
    status: str,
    load_model_s: float | None,
    total_s: float,
    generation_s: float,
    peak: MemoryPeak,
    model_footprint_mb: float | None,
    resumed_records: int = 0,
    error: str | None = None,
) -> RunMetrics:
    """Aggregate per-record results (the outputs.jsonl rows) into run metrics."""
    ok = [r for r in results if r.get("error") is None]
    out_tokens = sum(r["output_tokens"] for r in ok)
    return RunMetrics(
        status=status,
        load_model_s=load_model_s,
        total_s=total_s,
        generation_s=generation_s,
        num_samples=len(results),
        num_errors=len(results) - len(ok),
        input_tokens=sum(r["input_tokens"] for r in ok),
        output_tokens=out_tokens,
        output_tokens_per_s=out_tokens / generation_s if generation_s > 0 and ok else None,
        ttft_ms=percentiles([r["ttft_ms"] for r in ok if r.get("ttft_ms") is not None]),
        tpot_ms=percentiles([r["tpot_ms"] for r in ok if r.get("tpot_ms") is not None]),
        e2e_ms=percentiles([r["e2e_ms"] for r in ok if r.get("e2e_ms") is not None]),
        memory={
            "max_rss_mb": peak.max_rss_mb,
            "max_cuda_allocated_mb": peak.max_cuda_allocated_mb,
            "max_cuda_reserved_mb": peak.max_cuda_reserved_mb,
            "model_footprint_mb": model_footprint_mb,
        },
        resumed_records=resumed_records,
        error=error,
    )

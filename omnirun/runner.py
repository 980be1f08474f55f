"""The orchestrator: inputs → engine → task → run directory, with timings and memory around it."""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omnirun import benchmark, distributed, formats, hardware, inputs, metrics, models, outputs, resume, tasks, tracking
from omnirun.config import RunConfig, TaskName
from omnirun.engine import Engine, TransformersEngine
from omnirun.engine import create as create_engine
from omnirun.errors import ConfigError, InputError, OmnirunError
from omnirun.tasks import TASKS, WINDOW_BATCHES, TaskContext, run_interactive_chat

log = logging.getLogger(__name__)


def check(cfg: RunConfig) -> tuple[inputs.Inputs, hardware.HardwareInfo]:
    """Everything that can fail before a run directory exists: read the input, check the hardware request."""
    data = inputs.read(cfg.input, interactive_when_empty=cfg.task.name == TaskName.chat)
    if cfg.input.on_error == "fail" and data.problems:
        raise InputError("input.on_error=fail and the input has bad records: " + "; ".join(data.problems[:20]))
    models.resolve(cfg.model.name, cfg.model.gguf_file)  # a missing local path or .gguf fails here
    info = hardware.detect()
    hardware.plan(cfg.hardware, hardware.ModelSize(params=0), info)  # raises ConfigError for impossible requests
    return data, info


def run(
    cfg: RunConfig,
    run_dir: Path,
    data: inputs.Inputs,
    info: hardware.HardwareInfo,
    resolved_yaml: str,
    overrides: list[str],
    resuming: bool = False,
    rank: distributed.Rank | None = None,
) -> metrics.RunMetrics:
    """Run one job into `run_dir` on checked inputs; with `resuming`, continue the interrupted run there.
    On Ctrl-C, what finished is kept and metrics.json says `interrupted`; the KeyboardInterrupt propagates.
    Under a data-parallel launch (`rank`), each rank runs its shard; rank 0 merges and writes the metrics."""
    started = time.perf_counter()
    config_sha = resume.config_hash(cfg)
    main = rank is None or rank.is_main
    if resuming:
        skipped = prepare_resume(cfg, run_dir, data, config_sha)
    else:
        skipped = 0
        if main:
            write_run_files(run_dir, resolved_yaml, overrides)
    records = data.records[skipped:]
    engine = build_engine(cfg, info)
    if cfg.task.name == TaskName.benchmark:
        return run_benchmark(cfg, run_dir, engine, data, info, config_sha, started)
    if cfg.task.name == TaskName.chat:
        engine.load_tokenizer()  # before the weights: a model without a chat template fails fast
        if not engine.has_chat_template():
            raise ConfigError(
                f"task=chat needs a chat template, and model {cfg.model.name!r} has none; use task=generate"
            )
    writer = outputs.ResultWriter(distributed.shard_file(run_dir, rank))
    status = "completed"
    with metrics.PeakMemory() as peak:
        with metrics.timed() as load:
            engine.load_model()
        seed_everything(cfg.seed)  # after loading: torch is imported by then if the backend uses it
        assert engine.plan is not None
        batch_size = engine.plan.batch_size if cfg.task.batch_size == "auto" else int(cfg.task.batch_size)
        ctx = TaskContext(cfg.task, cfg.generation, cfg.seed, batch_size, writer, echo=data.source == "prompt")
        records = distributed.shard(records, rank, unit=batch_size * WINDOW_BATCHES)
        if main:
            write_manifest(run_dir, cfg, engine, info, data, config_sha)
        with metrics.timed(engine.device) as gen, Progress(len(records), cfg.task.progress and main) as progress:
            try:
                if data.source == "interactive":
                    outputs.write_json(run_dir / "conversation.json", run_interactive_chat(engine, ctx))
                else:
                    TASKS[str(cfg.task.name)](engine, records, ctx, progress)
            except KeyboardInterrupt:
                status = "interrupted"
        writer.close()
        footprint = engine.memory().model_footprint_mb
    engine.unload_model()
    rows, generation_s = writer.rows, gen.seconds
    if rank is not None:
        rows, generation_s, peak.max_rss_mb = merge_ranks(run_dir, rank, rows, generation_s, peak.max_rss_mb)
    result = metrics.summarize(
        rows,
        status=status,
        load_model_s=load.seconds,
        total_s=time.perf_counter() - started,
        generation_s=generation_s,
        peak=peak,
        model_footprint_mb=footprint,
        resumed_records=skipped,
    )
    if not main:
        return result
    outputs.write_json(run_dir / "metrics.json", result)
    if status == "interrupted":
        raise KeyboardInterrupt
    write_formats(cfg, run_dir, data, resolved_yaml, result)
    track(cfg, run_dir)
    return result


def prepare_resume(cfg: RunConfig, run_dir: Path, data: inputs.Inputs, config_sha: str) -> int:
    """Check the interrupted run is this job, keep its finished records; returns how many are done."""
    resume.check_same_job(run_dir, config_sha, data.fingerprint, cfg.resume_force)
    done = resume.finished_prefix(run_dir, data.records).done
    archive_previous_metrics(run_dir)
    log.info("resuming %s: %d records done, %d to go", run_dir, done, len(data.records) - done)
    with (run_dir / "command.txt").open("a") as f:
        f.write(outputs.command_line() + "\n")
    return done


def merge_ranks(
    run_dir: Path, rank: distributed.Rank, rows: list[dict[str, Any]], generation_s: float, rss_mb: float
) -> tuple[list[dict[str, Any]], float, float]:
    """Every rank's rows (in input order), the slowest rank's generation time and the largest RSS; rank 0
    also merges the per-rank output files into outputs.jsonl."""
    shards = distributed.gather((rows, generation_s, rss_mb), rank)
    distributed.barrier(rank)
    if rank.is_main:
        distributed.merge_shards(run_dir, rank.world)
    merged = [r for shard_rows, _, _ in shards for r in shard_rows]
    return merged, max(s for _, s, _ in shards), max(m for _, _, m in shards)


def track(cfg: RunConfig, run_dir: Path) -> None:
    """Log the finished run to the tracking backend, if one is configured."""
    tracking.log_run(cfg.tracking, cfg.output.root, run_dir, outputs.to_jsonable(asdict(cfg)))


def write_formats(
    cfg: RunConfig, run_dir: Path, data: inputs.Inputs, resolved_yaml: str, result: metrics.RunMetrics
) -> None:
    """The optional copies of the results in standard formats."""
    openai = cfg.output.openai_batch if cfg.output.openai_batch is not None else data.openai
    if openai:
        formats.write_openai_batch(run_dir, cfg.model.name)
    if cfg.output.dataset:
        try:
            formats.write_dataset(run_dir, resolved_yaml, asdict(result), cfg.output.push_to_hub)
        except Exception as exc:
            raise OmnirunError(f"output.dataset: writing or pushing the dataset failed: {exc}") from exc


def run_benchmark(
    cfg: RunConfig,
    run_dir: Path,
    engine: TransformersEngine,
    data: inputs.Inputs,
    info: hardware.HardwareInfo,
    config_sha: str,
    started: float,
) -> metrics.RunMetrics:
    """task=benchmark: load (timed), then benchmark.measure; writes benchmark.json/.md and metrics.json."""
    before = benchmark.machine_load()
    with metrics.PeakMemory() as load_mem, metrics.timed() as load:
        engine.load_model()
    seed_everything(cfg.seed)
    write_manifest(run_dir, cfg, engine, info, data, config_sha)
    bench = cfg.benchmark
    batches, source = benchmark_batches(cfg, engine, data)
    params = benchmark.forced_params(cfg.generation, bench)
    loop = benchmark.measure(engine, batches, params, bench, seed=cfg.seed)
    report = benchmark.summarize(loop, load.seconds, load_mem)
    after = benchmark.machine_load()
    gen = report["phases"]["generate"]
    footprint = engine.memory().model_footprint_mb
    engine.unload_model()
    full = {
        "schema_version": benchmark.SCHEMA_VERSION,
        "model": cfg.model.name,
        "workload": {
            "source": source,
            "batch_size": bench.batch_size,
            "prompt_tokens": bench.prompt_tokens if source == "synthetic" else None,
            "new_tokens": bench.new_tokens,
            **report["tokens"],
        },
        "settings": {
            "warmup_runs": bench.warmup_runs,
            "min_iterations": bench.min_iterations,
            "min_duration_s": bench.min_duration_s,
            "do_sample": params.do_sample,
        },
        "plan": asdict(engine.plan) if engine.plan else None,
        "phases": report["phases"],
        "memory": {**report["memory"], "model_footprint_mb": footprint},
        "stability": benchmark.stability(before, after, gen["stdev_pct"], bench.max_spread_pct),
        "definitions": benchmark.DEFINITIONS,
    }
    benchmark.write_report(run_dir, full)
    total_out = report["tokens"]["output_tokens_per_call"] * gen["count"]
    result = metrics.RunMetrics(
        status="completed",
        load_model_s=load.seconds,
        total_s=time.perf_counter() - started,
        generation_s=gen["mean"] * gen["count"],
        num_samples=gen["count"] * report["tokens"]["batch_size"],
        num_errors=0,
        input_tokens=int(report["tokens"]["input_tokens_per_call"] * gen["count"]),
        output_tokens=int(total_out),
        output_tokens_per_s=gen["tokens_per_s"],
        ttft_ms=_ms(report["phases"]["prefill"]),
        tpot_ms=_ms(report["phases"]["per_token"]),
        e2e_ms=_ms(gen),
        memory={**{k: v for k, v in report["memory"]["generate"].items()}, "model_footprint_mb": footprint},
        benchmark={
            "prefill_tokens_per_s": report["phases"]["prefill"]["prefill_tokens_per_s"],
            "decode_tokens_per_s": report["phases"]["decode"]["decode_tokens_per_s"],
            "samples_per_s": gen["samples_per_s"],
            "generate_p50_ms": gen["p50"] * 1e3,
            "unstable": full["stability"]["unstable"],
        },
    )
    outputs.write_json(run_dir / "metrics.json", result)
    track(cfg, run_dir)
    print(f"benchmark: {run_dir / 'benchmark.md'}")
    return result


def _ms(stats: dict[str, float]) -> dict[str, float] | None:
    if not stats["count"]:
        return None
    return {k: stats[k] * 1e3 for k in ("mean", "p50", "p90", "p99")}


def benchmark_batches(
    cfg: RunConfig, engine: TransformersEngine, data: inputs.Inputs
) -> tuple[Callable[[int], list[list[int]]], str]:
    """Token-id batches for call number i: synthetic prompts of an exact length, or the real inputs cycled."""
    size = cfg.benchmark.batch_size
    tok = engine.tokenizer
    if data.source in ("jsonl", "dataset"):
        prompts = [tasks.render(engine, r, cfg.task, chat=False) for r in data.records if r.error is None]
        if not prompts:
            raise InputError("task=benchmark: the input has no usable record")
        ids = [tok(text, add_special_tokens=special)["input_ids"] for text, special in prompts]
        return (lambda i: [ids[(i * size + j) % len(ids)] for j in range(size)]), "inputs"
    special = set(tok.all_special_ids)
    batch = benchmark.synthetic_prompts(len(tok), special, size, cfg.benchmark.prompt_tokens, cfg.seed)
    return (lambda i: batch), "synthetic"


def archive_previous_metrics(run_dir: Path) -> None:
    """Keep an interrupted attempt's metrics as metrics.attempt-N.json before the resumed run writes its own."""
    current = run_dir / "metrics.json"
    if current.exists():
        n = 1 + sum(1 for _ in run_dir.glob("metrics.attempt-*.json"))
        current.rename(run_dir / f"metrics.attempt-{n}.json")


def build_engine(cfg: RunConfig, info: hardware.HardwareInfo) -> Engine:
    """The engine for a run config: the only place config groups become engine arguments."""
    m, h = cfg.model, cfg.hardware
    return create_engine(
        m.name,
        backend=h.backend,
        optimize=h.optimize,
        device=str(h.device),
        dtype=str(h.dtype),
        quantization=None if h.quantization is None else str(h.quantization),
        device_map=h.device_map,
        gguf_file=m.gguf_file,
        num_threads=h.num_threads,
        hardware_info=info,
        batched=str(cfg.task.batch_size) != "1",
        generation=cfg.generation,
        trust_remote_code=m.trust_remote_code,
        model_type=m.model_type,
        attn_implementation=m.attn_implementation,
        max_memory=h.max_memory,
        low_cpu_mem_usage=m.low_cpu_mem_usage,
        revision=m.revision,
        cache_dir=m.cache_dir,
        allow_pickle=m.allow_pickle,
    )


def write_run_files(run_dir: Path, resolved_yaml: str, overrides: list[str]) -> None:
    (run_dir / "config.yaml").write_text(resolved_yaml)
    outputs.write_overrides(run_dir, overrides)
    (run_dir / "command.txt").write_text(outputs.command_line() + "\n")


def write_manifest(
    run_dir: Path,
    cfg: RunConfig,
    engine: TransformersEngine,
    info: hardware.HardwareInfo,
    data: inputs.Inputs,
    config_sha: str,
) -> None:
    outputs.write_json(
        run_dir / "manifest.json",
        {
            "omnirun_commit": outputs.git_commit(),
            "versions": outputs.versions(),
            "hardware": asdict(info),
            "plan": asdict(engine.plan) if engine.plan else None,
            "model": {
                "name": cfg.model.name,
                "resolved": asdict(engine.source) if engine.source else None,
                "model_type": engine.model_type,
            },
            "seed": cfg.seed,
            "input": {
                "source": data.source,
                "fingerprint": data.fingerprint,
                "num_records": len(data.records),
            },
            "config_sha256": config_sha,
        },
    )


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and (when loaded: a llama.cpp run never imports it) torch."""
    random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


class Progress:
    """A tqdm bar over samples, with output tokens/s in its postfix (ETA comes from tqdm)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="sample", disable=not enabled or total <= 1, dynamic_ncols=True)
        self.tokens = 0
        self.start = time.perf_counter()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

    def update(self, samples: int, tokens: int) -> None:
        self.tokens += tokens
        elapsed = time.perf_counter() - self.start
        if samples:
            self.bar.set_postfix(tok_s=f"{self.tokens / elapsed:.1f}" if elapsed > 0 else "-", refresh=False)
            self.bar.update(samples)


def print_summary(result: metrics.RunMetrics, run_dir: Path, out: Any = None) -> None:
    """The short table the CLI prints at the end."""
    import sys

    out = out or sys.stdout
    fmt = lambda v, unit="": "-" if v is None else f"{v:,.2f}{unit}"  # noqa: E731
    rows = [
        ("samples", f"{result.num_samples} ({result.num_errors} errors)"),
        ("load model", fmt(result.load_model_s, " s")),
        ("generation", fmt(result.generation_s, " s")),
        ("output tokens", str(result.output_tokens)),
        ("output tok/s", fmt(result.output_tokens_per_s)),
        ("ttft p50", fmt(result.ttft_ms and result.ttft_ms["p50"], " ms")),
        ("tpot p50", fmt(result.tpot_ms and result.tpot_ms["p50"], " ms")),
        ("e2e p50", fmt(result.e2e_ms and result.e2e_ms["p50"], " ms")),
        ("peak RSS", fmt(result.memory.get("max_rss_mb"), " MB")),
    ]
    width = max(len(k) for k, _ in rows)
    print("", file=out)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}", file=out)
    print(f"run directory: {run_dir}", file=out)
